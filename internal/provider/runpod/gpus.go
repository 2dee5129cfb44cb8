package runpod

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/daydreamlive/scopectl/internal/provider"
)

// REST has no GPU catalogue, so prices and stock come from GraphQL. lowestPrice is
// the price of the whole pod (gpuCount GPUs) on the cheapest machine with stock, and
// null (with a null stockStatus) when there is none; securePrice/communityPrice are
// list prices per GPU.
const gpuTypesQuery = `query GpuTypes {
  gpuTypes {
    id displayName memoryInGb secureCloud communityCloud securePrice communityPrice
    secure: lowestPrice(input: {gpuCount: 1, secureCloud: true}) { uninterruptablePrice stockStatus }
    community: lowestPrice(input: {gpuCount: 1, secureCloud: false}) { uninterruptablePrice stockStatus }
  }
}`

const gpuPriceQuery = `query GpuPrice($id: String, $count: Int, $secure: Boolean) {
  gpuTypes(input: {id: $id}) {
    id securePrice communityPrice
    lowestPrice(input: {gpuCount: $count, secureCloud: $secure}) { uninterruptablePrice stockStatus }
  }
}`

type wireLowest struct {
	Price flexNum    `json:"uninterruptablePrice"`
	Stock flexString `json:"stockStatus"`
}

type wireGPUType struct {
	ID             string      `json:"id"`
	DisplayName    string      `json:"displayName"`
	MemoryInGb     flexNum     `json:"memoryInGb"`
	SecureCloud    bool        `json:"secureCloud"`
	CommunityCloud bool        `json:"communityCloud"`
	SecurePrice    flexNum     `json:"securePrice"`
	CommunityPrice flexNum     `json:"communityPrice"`
	Secure         *wireLowest `json:"secure"`
	Community      *wireLowest `json:"community"`
	LowestPrice    *wireLowest `json:"lowestPrice"`
}

// graphql runs a query and decodes data into out.
func (c *Client) graphql(ctx context.Context, op, query string, vars map[string]any, out any) error {
	body, err := json.Marshal(map[string]any{"query": query, "variables": vars})
	if err != nil {
		return c.errorf("%s: %v", op, err)
	}
	resp, _, err := c.do(ctx, http.MethodPost, c.gqlURL, body)
	if err != nil {
		return c.classify(op, err, "")
	}
	var r struct {
		Data   json.RawMessage `json:"data"`
		Errors []struct {
			Message string `json:"message"`
			Path    []any  `json:"path"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(resp.Body, &r); err != nil {
		return c.errorf("%s: decode: %v", op, shortJSONError(err))
	}
	if len(r.Errors) > 0 {
		msgs := make([]string, len(r.Errors))
		for i, e := range r.Errors {
			msgs[i] = e.Message
		}
		msg := strings.Join(msgs, "; ")
		if strings.Contains(strings.ToLower(msg), "unauthorized") {
			return c.errorf("%s: %w: RunPod refused the API key; check %s and its permissions", op, provider.ErrUnauthorized, EnvAPIKey)
		}
		// An object asked for by id that comes back null with an error at its path
		// (pod(input: {podId}) for an unknown pod) does not exist.
		var roots map[string]json.RawMessage
		missing := json.Unmarshal(r.Data, &roots) == nil
		for _, e := range r.Errors {
			name := ""
			if len(e.Path) == 1 {
				name, _ = e.Path[0].(string)
			}
			if v, ok := roots[name]; !ok || string(v) != "null" {
				missing = false
			}
		}
		if missing {
			return c.errorf("%s: %w: %s", op, provider.ErrNotFound, truncate(oneLine(c.red.Redact(msg))))
		}
		return c.errorf("%s: GraphQL: %s", op, truncate(oneLine(c.red.Redact(msg))))
	}
	if err := json.Unmarshal(r.Data, out); err != nil {
		return c.errorf("%s: decode: %v", op, shortJSONError(err))
	}
	return nil
}

// GPUTypes lists RunPod's GPU types with the price per GPU-hour on the cheapest
// machine that has stock (else the list price), by cloud.
func (c *Client) GPUTypes(ctx context.Context) ([]provider.GPUType, error) {
	var data struct {
		GPUTypes []wireGPUType `json:"gpuTypes"`
	}
	if err := c.graphql(ctx, "list GPU types", gpuTypesQuery, nil, &data); err != nil {
		return nil, err
	}
	var out []provider.GPUType
	for _, g := range data.GPUTypes {
		if g.ID == "" || g.ID == "unknown" {
			continue
		}
		mem, _ := g.MemoryInGb.int("memoryInGb", 1<<20)
		t := provider.GPUType{ID: g.ID, Name: g.DisplayName, MemoryGB: mem}
		t.SecurePrice = price(g.SecureCloud, g.Secure, g.SecurePrice)
		t.CommunityPrice = price(g.CommunityCloud, g.Community, g.CommunityPrice)
		t.Available = inStock(g.Secure) || inStock(g.Community)
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func inStock(l *wireLowest) bool {
	return l != nil && l.Stock != "" && !strings.EqualFold(string(l.Stock), "none")
}

func price(offered bool, l *wireLowest, list flexNum) float64 {
	if l != nil && l.Price.Set && l.Price.V > 0 {
		return l.Price.V
	}
	if offered && list.V > 0 {
		return list.V
	}
	return 0
}

// podPrice is the hourly price of count GPUs of gpuID in a cloud: the lowest
// current offer, else count times the list price. ErrNoCapacity if RunPod quotes
// neither (not offered in that cloud); an error for an unknown GPU type.
func (c *Client) podPrice(ctx context.Context, gpuID string, count int, secure bool) (float64, error) {
	var data struct {
		GPUTypes []wireGPUType `json:"gpuTypes"`
	}
	vars := map[string]any{"id": gpuID, "count": count, "secure": secure}
	if err := c.graphql(ctx, "price of "+gpuID, gpuPriceQuery, vars, &data); err != nil {
		return 0, err
	}
	for _, g := range data.GPUTypes {
		if g.ID != gpuID {
			continue
		}
		if g.LowestPrice != nil && g.LowestPrice.Price.Set && g.LowestPrice.Price.V > 0 {
			return g.LowestPrice.Price.V, nil
		}
		list := g.CommunityPrice
		cloud := "COMMUNITY"
		if secure {
			list, cloud = g.SecurePrice, "SECURE"
		}
		if list.V > 0 {
			return list.V * float64(count), nil
		}
		return 0, fmt.Errorf("%w for %d x %s: RunPod quotes no %s cloud price for it", provider.ErrNoCapacity, count, gpuID, cloud)
	}
	return 0, fmt.Errorf("unknown GPU type %q (see scopectl's GPU list)", gpuID)
}
