// go-server: a go-spiffe spiffetls server for the interop suite.
//
// Usage: go-server -listen 127.0.0.1:0 -allow spiffe://a.test/rust/peer [-exit-on-stdin-eof]
//
// Takes its X.509-SVID and bundles from the Workload API (SPIFFE_ENDPOINT_SOCKET), authorizes
// exactly one client ID, prints "listening on ADDR" when ready, and answers every line a client
// sends with the client's SPIFFE ID. Handshake failures are logged to stderr as
// "handshake failed: ..." and the server keeps serving. Stops on SIGTERM/SIGINT, and with
// -exit-on-stdin-eof when its standard input closes (so it never outlives the test that runs it).
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	allow := flag.String("allow", "", "the one client SPIFFE ID to authorize")
	stdinEOF := flag.Bool("exit-on-stdin-eof", false, "exit when standard input closes")
	flag.Parse()
	if *stdinEOF {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			os.Exit(0)
		}()
	}
	allowed, err := spiffeid.FromString(*allow)
	if err != nil {
		fmt.Fprintf(os.Stderr, "go-server: -allow %q: %v\n", *allow, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	source, err := workloadapi.NewX509Source(startCtx)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go-server: workload API: %v\n", err)
		os.Exit(1)
	}
	defer source.Close()

	inner, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "go-server: listen %s: %v\n", *listen, err)
		os.Exit(1)
	}
	// The SVID and bundles are followed as the agent rotates them.
	ln, err := spiffetls.NewListenerWithMode(ctx, inner, spiffetls.MTLSServerWithSource(tlsconfig.AuthorizeID(allowed), source))
	if err != nil {
		fmt.Fprintf(os.Stderr, "go-server: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("listening on %s\n", inner.Addr())
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			fmt.Fprintf(os.Stderr, "go-server: accept: %v\n", err)
			continue
		}
		go serve(conn)
	}
}

func serve(conn net.Conn) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	peer, err := spiffetls.PeerIDFromConn(conn)
	if err != nil {
		fmt.Fprintf(os.Stderr, "handshake failed: %v\n", err)
		return
	}
	_ = conn.SetDeadline(time.Time{})
	fmt.Fprintf(os.Stderr, "accepted %s\n", peer)
	lines := bufio.NewScanner(conn)
	for lines.Scan() {
		if _, err := fmt.Fprintf(conn, "%s\n", peer); err != nil {
			return
		}
	}
}
