// go-client: a go-spiffe spiffetls client for the interop suite.
//
// Usage: go-client -addr 127.0.0.1:8443 -expect spiffe://a.test/rust/server [-count 1]
//
// Takes its X.509-SVID and bundles from the Workload API (SPIFFE_ENDPOINT_SOCKET), dials ADDR
// expecting exactly one server ID, sends "whoami" COUNT times and prints each reply line as
// "reply: LINE". Exits 0 when every reply arrived, 1 on any failure (the error on stderr).
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

func main() {
	addr := flag.String("addr", "", "server address")
	expect := flag.String("expect", "", "the server SPIFFE ID to expect")
	count := flag.Int("count", 1, "requests to send")
	flag.Parse()
	expected, err := spiffeid.FromString(*expect)
	if err != nil {
		fmt.Fprintf(os.Stderr, "go-client: -expect %q: %v\n", *expect, err)
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	source, err := workloadapi.NewX509Source(ctx)
	if err != nil {
		fmt.Fprintf(os.Stderr, "go-client: workload API: %v\n", err)
		os.Exit(1)
	}
	defer source.Close()

	conn, err := spiffetls.DialWithMode(ctx, "tcp", *addr,
		spiffetls.MTLSClientWithSource(tlsconfig.AuthorizeID(expected), source))
	if err != nil {
		fmt.Fprintf(os.Stderr, "go-client: dial: %v\n", err)
		os.Exit(1)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	lines := bufio.NewScanner(conn)
	for i := 0; i < *count; i++ {
		if _, err := fmt.Fprintf(conn, "whoami\n"); err != nil {
			fmt.Fprintf(os.Stderr, "go-client: write: %v\n", err)
			os.Exit(1)
		}
		if !lines.Scan() {
			err := lines.Err()
			if err == nil {
				err = fmt.Errorf("connection closed by the server")
			}
			fmt.Fprintf(os.Stderr, "go-client: read: %v\n", err)
			os.Exit(1)
		}
		fmt.Printf("reply: %s\n", lines.Text())
	}
}
