// Package s3 is the s3://BUCKET/prefix remote: a RunPod network volume's S3-compatible
// API (bucket = network volume id, s3://VOLID/models/lora is /workspace/models/lora on a
// pod that mounts the volume), or any other S3 server.
//
// Configuration (remote.Env):
//
//	Lookup("s3_access_key_id"), Lookup("s3_secret_access_key")  the S3 API key
//	Options["s3_endpoint"]  https://s3api-{dc}.runpod.io (http only for loopback);
//	                        derived from s3_region when empty
//	Options["s3_region"]    datacenter id, e.g. EU-RO-1; derived from a RunPod
//	                        endpoint when empty
//	Options["parallel"]     parts uploaded at once (default 4)
//	Options["part_size"]    multipart chunk size (default 16MiB, at least 5MiB; RunPod
//	                        accepts parts up to 500MB)
//
// S3 makes an object visible only when its PutObject or CompleteMultipartUpload succeeds,
// so Put publishes straight to the final key: that is the atomic rename of other
// backends. Uploads larger than one part go through a multipart upload that an
// interrupted Put leaves open and the next Put of the same content resumes (see put.go).
package s3

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/url"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/s3utils"

	"github.com/daydreamlive/scopectl/internal/atomicfile"
	"github.com/daydreamlive/scopectl/internal/config"
	"github.com/daydreamlive/scopectl/internal/remote"
	"github.com/daydreamlive/scopectl/internal/secret"
	"github.com/daydreamlive/scopectl/internal/units"
)

// Option and credential keys read from remote.Env.
const (
	KeyAccessKeyID     = "s3_access_key_id"
	KeySecretAccessKey = "s3_secret_access_key"
	OptEndpoint        = "s3_endpoint"
	OptRegion          = "s3_region"
	OptParallel        = "parallel"
	OptPartSize        = "part_size"
)

// S3 limits (https://docs.aws.amazon.com/AmazonS3/latest/userguide/qfacts.html).
const (
	MinPartSize     = 5 << 20 // every part but the last
	MaxPartSize     = 5 << 30
	MaxParts        = 10000
	DefaultPartSize = 16 << 20
	DefaultParallel = 4
	maxParallel     = 64
)

// maxListItems bounds a listing (files plus sub-folders) against servers that loop.
const maxListItems = 1_000_000

// metaSHA256 is the user metadata key (x-amz-meta-sha256) holding the content's sha256.
const metaSHA256 = "Sha256"

func init() { remote.Register("s3", Open) }

// S3 is a folder (key prefix) in a bucket.
type S3 struct {
	core     *minio.Core
	bucket   string
	prefix   string // "" or ends in "/"
	endpoint string // for String()
	parallel int
	partSize int64
	red      *secret.Redactor // scrubs this remote's credentials from every error

	listPageSize int // max-keys per ListObjectsV2 request; 0 = server default (tests lower it)
}

// envOf names the environment variables a setting is read from, for messages:
// "SCOPECTL_S3_ACCESS_KEY_ID (or AWS_ACCESS_KEY_ID)". Secrets come only from the
// environment (or .env), so a message naming the config key would send the user
// looking for a flag that does not exist.
func envOf(key string) string {
	for _, k := range config.Keys() {
		if k.Name == key && len(k.Env) > 0 {
			if len(k.Env) == 1 {
				return k.Env[0]
			}
			return k.Env[0] + " (or " + strings.Join(k.Env[1:], ", ") + ")"
		}
	}
	return key
}

// Open is the constructor registered for s3:// URLs.
func Open(_ context.Context, u *url.URL, env remote.Env) (remote.Remote, error) {
	if u.User != nil {
		// Never echo u.User: it may hold a key.
		return nil, fmt.Errorf("s3://%s%s: credentials do not belong in the URL; set %s and %s", u.Host, u.Path, envOf(KeyAccessKeyID), envOf(KeySecretAccessKey))
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("s3://%s%s: unexpected query or fragment (S3 options are set with %s, %s, %s, %s)", u.Host, u.Path, OptEndpoint, OptRegion, OptParallel, OptPartSize)
	}
	bucket := u.Host
	if err := s3utils.CheckValidBucketName(bucket); err != nil {
		return nil, fmt.Errorf("s3://%s%s: bucket (network volume id): %v", bucket, u.Path, err)
	}
	prefix := strings.TrimPrefix(path.Clean("/"+u.Path), "/")
	if prefix != "" {
		prefix += "/"
	}
	if err := s3utils.CheckValidObjectNamePrefix(prefix); err != nil {
		return nil, fmt.Errorf("s3://%s%s: bad prefix: %v", bucket, u.Path, err)
	}

	var ak, sk secret.Secret
	if env.Lookup != nil {
		ak, sk = env.Lookup(KeyAccessKeyID), env.Lookup(KeySecretAccessKey)
	}
	if !ak.IsSet() || !sk.IsSet() {
		return nil, fmt.Errorf("s3://%s/%s: S3 credentials missing: set %s and %s (a RunPod S3 API key)", bucket, prefix, envOf(KeyAccessKeyID), envOf(KeySecretAccessKey))
	}
	red := &secret.Redactor{}
	red.Add(ak)
	red.Add(sk)
	if env.Secrets != nil {
		env.Secrets.Add(ak)
		env.Secrets.Add(sk)
	}

	opt := env.Options
	endpoint, region, err := endpointAndRegion(opt[OptEndpoint], opt[OptRegion])
	if err != nil && opt["allow_http"] == "true" && strings.HasPrefix(opt[OptEndpoint], "http://") {
		// Test networks only (--allow-http): credentials still never travel, SigV4 signs.
		endpoint, region, err = endpointAndRegion("https://"+strings.TrimPrefix(opt[OptEndpoint], "http://"), opt[OptRegion])
		if err == nil {
			endpoint.Scheme = "http"
		}
	}
	if err != nil {
		return nil, fmt.Errorf("s3://%s/%s: %w", bucket, prefix, err)
	}
	parallel := DefaultParallel
	if v := opt[OptParallel]; v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxParallel {
			return nil, fmt.Errorf("s3: %s=%q: want a number from 1 to %d", OptParallel, v, maxParallel)
		}
		parallel = n
	}
	partSize := int64(DefaultPartSize)
	if v := opt[OptPartSize]; v != "" {
		n, err := units.ParseSize(v)
		if err != nil || n < MinPartSize || n > MaxPartSize {
			return nil, fmt.Errorf("s3: %s=%q: want a size from 5MiB to 5GiB (e.g. 16MiB)", OptPartSize, v)
		}
		partSize = n
	}

	tr, err := minio.DefaultTransport(endpoint.Scheme == "https")
	if err != nil {
		return nil, err
	}
	// RunPod computes MD5s (ETags) of files on first listing and assembles multipart
	// uploads synchronously; both can take far longer than minio's one minute.
	tr.ResponseHeaderTimeout = 10 * time.Minute
	core, err := minio.NewCore(endpoint.Host, &minio.Options{
		Creds:        credentials.NewStaticV4(ak.Reveal(), sk.Reveal(), ""),
		Secure:       endpoint.Scheme == "https",
		Region:       region, // set, so minio never calls GetBucketLocation (RunPod lacks it)
		BucketLookup: minio.BucketLookupPath,
		Transport:    tr,
	})
	if err != nil {
		return nil, red.Error(fmt.Errorf("s3: %w", err))
	}
	return &S3{
		core:     core,
		bucket:   bucket,
		prefix:   prefix,
		endpoint: endpoint.Host,
		parallel: parallel,
		partSize: partSize,
		red:      red,
	}, nil
}

// endpointAndRegion validates the endpoint URL and fills in whichever of endpoint and
// region is missing from the other, RunPod style: https://s3api-eu-ro-1.runpod.io ⇔ EU-RO-1.
func endpointAndRegion(endpoint, region string) (*url.URL, string, error) {
	if endpoint == "" {
		if region == "" {
			return nil, "", fmt.Errorf("set %s (e.g. https://s3api-eu-ro-1.runpod.io) or %s (the datacenter id, e.g. EU-RO-1)", OptEndpoint, OptRegion)
		}
		endpoint = "https://s3api-" + strings.ToLower(region) + ".runpod.io"
	}
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return nil, "", fmt.Errorf("%s %q: want a URL like https://s3api-eu-ro-1.runpod.io", OptEndpoint, remote.Redact(endpoint))
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !isLoopback(u.Hostname()) {
			return nil, "", fmt.Errorf("%s %s: plain http is only allowed to a loopback address; use https", OptEndpoint, u.Redacted())
		}
	default:
		return nil, "", fmt.Errorf("%s %s: want an https:// URL", OptEndpoint, u.Redacted())
	}
	if region == "" {
		h := strings.ToLower(u.Hostname())
		if dc, ok := strings.CutPrefix(h, "s3api-"); ok && strings.HasSuffix(dc, ".runpod.io") {
			region = strings.ToUpper(strings.TrimSuffix(dc, ".runpod.io"))
		}
	}
	return u, region, nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (s *S3) String() string {
	return "s3://" + s.bucket + "/" + strings.TrimSuffix(s.prefix, "/") + " (" + s.endpoint + ")"
}

func (s *S3) Close() error { return nil }

// errf wraps an error for the caller: prefixed with the remote and scrubbed of the
// credentials (errors.Is still sees through to the cause).
func (s *S3) errf(format string, args ...any) error {
	return s.red.Error(fmt.Errorf("%s: "+format, append([]any{s}, args...)...))
}

func (s *S3) key(name string) string { return s.prefix + name }

func s3Code(err error) string { return minio.ToErrorResponse(err).Code }

func isNotFound(err error) bool {
	switch s3Code(err) {
	case "NoSuchKey", "NotFound":
		return true
	}
	return false
}

// List returns the objects directly in the prefix ("folder"): ListObjectsV2 with the
// delimiter "/", so objects in sub-folders come back as common prefixes and are left
// out, following continuation tokens page by page.
func (s *S3) List(ctx context.Context) ([]remote.Entry, error) {
	var out []remote.Entry
	seen := map[string]bool{}
	items := 0
	for obj := range s.core.ListObjectsIter(ctx, s.bucket, minio.ListObjectsOptions{
		Prefix:     s.prefix,
		Recursive:  false, // delimiter "/"
		MaxKeys:    s.listPageSize,
		FetchOwner: new(bool),
	}) {
		if obj.Err != nil {
			return nil, s.errf("list: %w", obj.Err)
		}
		// A server that hands out the same continuation token again (RunPod documents a
		// "same next token" bug) would make this loop forever: stop at a repeated key,
		// or at an absurd count if only common prefixes repeat.
		if items++; items > maxListItems {
			return nil, s.errf("list: more than %d entries; is the server repeating pages?", maxListItems)
		}
		if strings.HasSuffix(obj.Key, "/") && obj.Size == 0 && obj.LastModified.IsZero() {
			continue // a common prefix: a sub-folder
		}
		if seen[obj.Key] {
			return nil, s.errf("list: server repeated key %q across listing pages", obj.Key)
		}
		seen[obj.Key] = true
		name, ok := strings.CutPrefix(obj.Key, s.prefix)
		if !ok || remote.CheckName(name) != nil || remote.IsTemp(name) || atomicfile.IsTemp(name) {
			continue // directory placeholders ("sub/"), odd names, temporaries
		}
		out = append(out, remote.Entry{
			Name:    name,
			Size:    obj.Size,
			SHA256:  listedSHA256(obj),
			ModTime: obj.LastModified,
		})
	}
	// minio's iterator stops silently when the context ends; a short listing must not
	// pass for a complete one.
	if err := ctx.Err(); err != nil {
		return nil, s.errf("list: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// listedSHA256 is the sha256 user metadata if the listing carries it (MinIO's listing
// extension does; standard S3 ListObjectsV2 does not, and then it stays empty).
func listedSHA256(obj minio.ObjectInfo) string {
	for _, m := range []minio.StringMap{obj.UserMetadataStripped, obj.UserMetadata} {
		for k, v := range m {
			k = strings.ToLower(k)
			if k == "sha256" || k == "x-amz-meta-sha256" {
				if isSHA256Hex(v) {
					return v
				}
			}
		}
	}
	return ""
}

func metaSHA(info minio.ObjectInfo) string {
	for k, v := range info.UserMetadata {
		if strings.EqualFold(k, metaSHA256) && isSHA256Hex(v) {
			return v
		}
	}
	return ""
}

func isSHA256Hex(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Get streams name from byte offset off (an HTTP Range request when off > 0).
func (s *S3) Get(ctx context.Context, name string, off int64) (io.ReadCloser, error) {
	if err := remote.CheckName(name); err != nil {
		return nil, err
	}
	if off < 0 {
		return nil, s.errf("get %s: negative offset %d", name, off)
	}
	var opts minio.GetObjectOptions
	if off > 0 {
		if err := opts.SetRange(off, 0); err != nil {
			return nil, s.errf("get %s: %w", name, err)
		}
	}
	rc, _, _, err := s.core.GetObject(ctx, s.bucket, s.key(name), opts)
	if err == nil {
		return rc, nil
	}
	if isNotFound(err) {
		return nil, s.errf("%s: %w", name, remote.ErrNotFound)
	}
	if s3Code(err) == "InvalidRange" {
		// "bytes=SIZE-" is unsatisfiable in S3; reading from the very end is not an error.
		if info, serr := s.core.StatObject(ctx, s.bucket, s.key(name), minio.StatObjectOptions{}); serr == nil && off == info.Size {
			return io.NopCloser(strings.NewReader("")), nil
		}
	}
	return nil, s.errf("get %s: %w", name, err)
}

// Delete removes name. S3's DELETE succeeds for absent keys, so it asks first.
func (s *S3) Delete(ctx context.Context, name string) error {
	if err := remote.CheckName(name); err != nil {
		return err
	}
	if _, err := s.core.StatObject(ctx, s.bucket, s.key(name), minio.StatObjectOptions{}); err != nil {
		if isNotFound(err) {
			return s.errf("%s: %w", name, remote.ErrNotFound)
		}
		return s.errf("delete %s: %w", name, err)
	}
	if err := s.core.RemoveObject(ctx, s.bucket, s.key(name), minio.RemoveObjectOptions{}); err != nil {
		return s.errf("delete %s: %w", name, err)
	}
	return nil
}

// Hash returns the sha256 recorded in the object's metadata at upload (HeadObject), or
// streams the object and hashes it when there is none (objects put by other tools).
func (s *S3) Hash(ctx context.Context, name string) (string, error) {
	if err := remote.CheckName(name); err != nil {
		return "", err
	}
	info, err := s.core.StatObject(ctx, s.bucket, s.key(name), minio.StatObjectOptions{})
	if err != nil {
		if isNotFound(err) {
			return "", s.errf("%s: %w", name, remote.ErrNotFound)
		}
		return "", s.errf("hash %s: %w", name, err)
	}
	if h := metaSHA(info); h != "" {
		return h, nil
	}
	rc, err := s.Get(ctx, name, 0)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(h, &ctxReader{ctx: ctx, r: rc})
	if err != nil {
		return "", s.errf("hash %s: %w", name, err)
	}
	if n != info.Size {
		return "", s.errf("hash %s: read %d bytes of %d", name, n, info.Size)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// ctxReader stops a copy when the context is cancelled.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

var _ remote.Hasher = (*S3)(nil)
