package s3

// An in-process S3 server for the tests: gofakes3 (the engine behind `rclone serve s3`)
// with its memory backend, behind a front that adds what gofakes3 lacks and AWS does:
// SigV4 signature checks (gofakes3 accepts any credentials) and verification of a signed
// payload hash (x-amz-content-sha256). The front also logs every request by S3
// operation and can delay or damage requests, for tests of the client's behaviour.

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/s3utils"

	"github.com/daydreamlive/scopectl/internal/remote"
	"github.com/daydreamlive/scopectl/internal/secret"
)

const (
	testBucket = "vol0abc123" // a RunPod network volume id
	testPrefix = "models/lora/"
	testRegion = "EU-RO-1"
	testAK     = "user_2testAccessKey0000"
	testSK     = "rps_testSecretKey00000000000000"
)

// req is one logged request.
type req struct {
	Op       string // S3 operation name
	Key      string
	Part     int
	UploadID string
	Query    url.Values
	Body     []byte // kept for CompleteMultipartUpload only
}

type fakeS3 struct {
	t       *testing.T
	backend *s3mem.Backend
	handler http.Handler
	srv     *httptest.Server
	URL     string

	mu           sync.Mutex
	checkPayload bool // verify x-amz-content-sha256 against the body, as AWS does
	log          []req
	done         []req // UploadPart requests in order of completion
	inflight     int
	maxInflight  int
	// tamper, if set, may change a request body before any check (damage in transit).
	tamper func(r req, body []byte) []byte
	// loopList makes ListObjectsV2 ignore continuation tokens: every page is the first,
	// like a server that hands out the same token again.
	loopList bool
	// before, if set, runs (and may block) before gofakes3 serves a request.
	before func(r req)
}

// set changes the server's knobs while requests may be running.
func (f *fakeS3) set(fn func(f *fakeS3)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// doneParts returns the UploadPart requests in order of completion, and the most that
// ran at once.
func (f *fakeS3) doneParts() ([]req, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.done), f.maxInflight
}

// completed counts the UploadPart requests served so far.
func (f *fakeS3) completed() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.done)
}

func newFakeS3(t *testing.T) *fakeS3 {
	t.Helper()
	be := s3mem.New()
	if err := be.CreateBucket(testBucket); err != nil {
		t.Fatal(err)
	}
	f := &fakeS3{t: t, backend: be, checkPayload: true}
	f.handler = gofakes3.New(be, gofakes3.WithLogger(gofakes3.DiscardLog())).Server()
	f.srv = httptest.NewServer(f)
	f.URL = f.srv.URL
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeS3) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if code, msg := verifySigV4(r, testAK, testSK); code != "" {
		writeS3Error(w, http.StatusForbidden, code, msg)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		writeS3Error(w, http.StatusBadRequest, "IncompleteBody", err.Error())
		return
	}
	rq := classify(r)
	f.mu.Lock()
	tamper, before, check, loop := f.tamper, f.before, f.checkPayload, f.loopList
	f.mu.Unlock()
	if loop && rq.Op == "ListObjectsV2" {
		q := r.URL.Query()
		q.Del("continuation-token")
		r.URL.RawQuery = q.Encode()
	}
	if tamper != nil {
		body = tamper(rq, body)
	}
	switch ph := r.Header.Get("X-Amz-Content-Sha256"); {
	case strings.HasPrefix(ph, "STREAMING-"):
		// gofakes3 would store aws-chunked framing as part data; the client must not send it.
		writeS3Error(w, http.StatusNotImplemented, "NotImplemented", "aws-chunked payloads are not accepted by this test server")
		return
	case check && isSHA256Hex(ph):
		if s := sha256.Sum256(body); hex.EncodeToString(s[:]) != ph {
			writeS3Error(w, http.StatusBadRequest, "XAmzContentSHA256Mismatch", "The provided 'x-amz-content-sha256' header does not match what was computed.")
			return
		}
	}
	if rq.Op == "CompleteMultipartUpload" {
		rq.Body = body
	}
	f.mu.Lock()
	f.log = append(f.log, rq)
	if rq.Op == "UploadPart" {
		f.inflight++
		f.maxInflight = max(f.maxInflight, f.inflight)
	}
	f.mu.Unlock()
	if before != nil {
		before(rq)
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	r.Header.Set("Content-Length", fmt.Sprint(len(body)))
	f.handler.ServeHTTP(w, r)
	if rq.Op == "UploadPart" {
		f.mu.Lock()
		f.inflight--
		f.done = append(f.done, rq)
		f.mu.Unlock()
	}
}

// classify names the S3 operation of a path-style request.
func classify(r *http.Request) req {
	q := r.URL.Query()
	key := strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, "/"+testBucket), "/")
	rq := req{Key: key, UploadID: q.Get("uploadId"), Query: q}
	fmt.Sscan(q.Get("partNumber"), &rq.Part)
	switch {
	case r.Method == http.MethodPut && q.Has("partNumber"):
		rq.Op = "UploadPart"
	case r.Method == http.MethodPut:
		rq.Op = "PutObject"
	case r.Method == http.MethodPost && q.Has("uploads"):
		rq.Op = "CreateMultipartUpload"
	case r.Method == http.MethodPost && q.Has("uploadId"):
		rq.Op = "CompleteMultipartUpload"
	case r.Method == http.MethodDelete && q.Has("uploadId"):
		rq.Op = "AbortMultipartUpload"
	case r.Method == http.MethodDelete:
		rq.Op = "DeleteObject"
	case r.Method == http.MethodGet && q.Has("uploads"):
		rq.Op = "ListMultipartUploads"
	case r.Method == http.MethodGet && q.Has("uploadId"):
		rq.Op = "ListParts"
	case r.Method == http.MethodGet && q.Get("list-type") == "2":
		rq.Op = "ListObjectsV2"
	case r.Method == http.MethodGet && key == "":
		rq.Op = "ListObjects"
	case r.Method == http.MethodGet:
		rq.Op = "GetObject"
	case r.Method == http.MethodHead:
		rq.Op = "HeadObject"
	default:
		rq.Op = r.Method
	}
	return rq
}

func writeS3Error(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>%s</Message><RequestId>test</RequestId></Error>`, code, xmlEscape(msg))
}

func xmlEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '<':
			b.WriteString("&lt;")
		case '>':
			b.WriteString("&gt;")
		case '&':
			b.WriteString("&amp;")
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// verifySigV4 checks an AWS Signature Version 4 Authorization header
// (https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html).
// Like AWS, its error for an unknown key names the key, so the client's errors must
// scrub it.
func verifySigV4(r *http.Request, ak, sk string) (code, msg string) {
	auth := r.Header.Get("Authorization")
	rest, ok := strings.CutPrefix(auth, "AWS4-HMAC-SHA256 ")
	if !ok {
		return "AccessDenied", "missing or non-SigV4 Authorization header"
	}
	fields := map[string]string{}
	for _, kv := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
		fields[k] = v
	}
	cred := strings.Split(fields["Credential"], "/")
	if len(cred) != 5 || cred[3] != "s3" || cred[4] != "aws4_request" {
		return "AuthorizationHeaderMalformed", "bad Credential " + fields["Credential"]
	}
	if cred[0] != ak {
		return "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records: " + cred[0]
	}
	if cred[2] != testRegion {
		return "AuthorizationHeaderMalformed", "the region '" + cred[2] + "' is wrong; expecting '" + testRegion + "'"
	}
	amzDate := r.Header.Get("X-Amz-Date")
	if t, err := time.Parse("20060102T150405Z", amzDate); err != nil || time.Since(t).Abs() > 15*time.Minute || !strings.HasPrefix(amzDate, cred[1]) {
		return "RequestTimeTooSkewed", "bad X-Amz-Date " + amzDate
	}
	signed := strings.Split(fields["SignedHeaders"], ";")
	var ch strings.Builder
	for _, h := range signed {
		v := strings.Join(r.Header.Values(h), ",")
		if h == "host" {
			v = r.Host
		}
		ch.WriteString(h + ":" + strings.Join(strings.Fields(v), " ") + "\n")
	}
	creq := strings.Join([]string{
		r.Method,
		s3utils.EncodePath(r.URL.Path),
		strings.ReplaceAll(r.URL.Query().Encode(), "+", "%20"),
		ch.String(),
		fields["SignedHeaders"],
		r.Header.Get("X-Amz-Content-Sha256"),
	}, "\n")
	scope := strings.Join(cred[1:], "/")
	h := sha256.Sum256([]byte(creq))
	sts := "AWS4-HMAC-SHA256\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(h[:])
	key := []byte("AWS4" + sk)
	for _, p := range cred[1:] {
		key = hmacSHA256(key, p)
	}
	want := hex.EncodeToString(hmacSHA256(key, sts))
	if !hmac.Equal([]byte(want), []byte(fields["Signature"])) {
		return "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided. Check your key and signing method."
	}
	return "", ""
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}

// ops returns the logged operations named op.
func (f *fakeS3) ops(op string) []req {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []req
	for _, r := range f.log {
		if r.Op == op {
			out = append(out, r)
		}
	}
	return out
}

func (f *fakeS3) resetLog() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log, f.done, f.maxInflight = nil, nil, 0
}

// keys lists every object in the bucket, bypassing the client (temporaries included).
func (f *fakeS3) keys(t *testing.T) []string {
	t.Helper()
	l, err := f.backend.ListBucket(testBucket, nil, gofakes3.ListBucketPage{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, c := range l.Contents {
		out = append(out, c.Key)
	}
	sort.Strings(out)
	return out
}

// core is a raw client for setting up and checking server state.
func (f *fakeS3) core(t *testing.T) *minio.Core {
	t.Helper()
	c, err := minio.NewCore(strings.TrimPrefix(f.URL, "http://"), &minio.Options{
		Creds: credentials.NewStaticV4(testAK, testSK, ""), Region: testRegion, BucketLookup: minio.BucketLookupPath,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// openUploads lists the bucket's open multipart uploads as "key uploadID".
func (f *fakeS3) openUploads(t *testing.T) []string {
	t.Helper()
	r, err := f.core(t).ListMultipartUploads(context.Background(), testBucket, "", "", "", "", 1000)
	if err != nil && minio.ToErrorResponse(err).Code != "NoSuchUpload" {
		t.Fatal(err)
	}
	var out []string
	for _, u := range r.Uploads {
		out = append(out, u.Key+" "+u.UploadID)
	}
	return out
}

// env is the remote.Env of a client with the given credentials and options.
func testEnv(url, ak, sk string, opts map[string]string) remote.Env {
	o := map[string]string{OptEndpoint: url, OptRegion: testRegion, OptPartSize: "5MiB", OptParallel: "4"}
	for k, v := range opts {
		o[k] = v
	}
	return remote.Env{
		Secrets: &secret.Redactor{},
		Lookup: func(key string) secret.Secret {
			switch key {
			case KeyAccessKeyID:
				return secret.New(ak)
			case KeySecretAccessKey:
				return secret.New(sk)
			}
			return secret.Secret{}
		},
		Options: o,
	}
}

// open opens the test folder on f through remote.Open, with options overriding the
// test defaults (5 MiB parts, 4 in parallel).
func (f *fakeS3) open(t *testing.T, opts map[string]string) *S3 {
	t.Helper()
	r, err := remote.Open(context.Background(), "s3://"+testBucket+"/"+strings.TrimSuffix(testPrefix, "/"), testEnv(f.URL, testAK, testSK, opts))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r.(*S3)
}
