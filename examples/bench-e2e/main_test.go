package main

import (
	"strings"
	"testing"
	"time"
)

const wrkReport = `Running 5s test @ http://127.0.0.1:40000/api/v1/categories
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     6.71ms    3.02ms  45.10ms   81.22%
    Req/Sec     7.52k   412.33     8.01k    88.00%
  Latency Distribution
     50%    6.12ms
     75%    7.80ms
     90%   10.02ms
     99%   18.49ms
  37869 requests in 5.01s, 9.21MB read
Requests/sec:   7551.32
Transfer/sec:      1.84MB
`

func TestParseWrk(t *testing.T) {
	tests := []struct {
		name string
		text string
		want loadResult
	}{
		{"clean run", wrkReport, loadResult{rps: 7551.32, p99: 18490 * time.Microsecond, requests: 37869}},
		{"non-2xx and socket errors are failures",
			strings.Replace(wrkReport, "Requests/sec:", "  Socket errors: connect 0, read 2, write 0, timeout 1\n  Non-2xx or 3xx responses: 12\nRequests/sec:", 1),
			loadResult{rps: 7551.32, p99: 18490 * time.Microsecond, requests: 37869, failed: 15}},
		{"microseconds", strings.Replace(wrkReport, "99%   18.49ms", "99%  850.00us", 1),
			loadResult{rps: 7551.32, p99: 850 * time.Microsecond, requests: 37869}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseWrk(tt.text)
			if err != nil {
				t.Fatal(err)
			}
			if got.requests != tt.want.requests || got.failed != tt.want.failed || got.p99.Round(time.Microsecond) != tt.want.p99 ||
				got.rps != tt.want.rps {
				t.Errorf("parseWrk = %+v, want %+v", got, tt.want)
			}
		})
	}
	if _, err := parseWrk("wrk: unable to connect"); err == nil {
		t.Error("parseWrk accepted a report without figures")
	}
}

func TestMedian(t *testing.T) {
	for _, tt := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		if got := median(tt.in); got != tt.want {
			t.Errorf("median(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}
