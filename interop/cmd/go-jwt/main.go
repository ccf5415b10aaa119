// go-jwt: JWT-SVIDs through go-spiffe, for the interop suite.
//
// Usage:
//
//	go-jwt fetch -audience AUD            prints a JWT-SVID for AUD on stdout
//	go-jwt validate -audience AUD TOKEN   validates TOKEN against the Workload API's JWT bundles
//	                                      (locally, with go-spiffe's jwtsvid.ParseAndValidate);
//	                                      prints "valid SUBJECT" and exits 0, or exits 1 naming the error
//
// The Workload API is at SPIFFE_ENDPOINT_SOCKET.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: go-jwt fetch|validate -audience AUD [TOKEN]")
		os.Exit(2)
	}
	flags := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	audience := flags.String("audience", "", "audience")
	_ = flags.Parse(os.Args[2:])
	if *audience == "" {
		fmt.Fprintln(os.Stderr, "go-jwt: -audience is required")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client, err := workloadapi.New(ctx)
	if err != nil {
		fmt.Fprintf(os.Stderr, "go-jwt: workload API: %v\n", err)
		os.Exit(1)
	}
	defer client.Close()
	switch os.Args[1] {
	case "fetch":
		svid, err := client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: *audience})
		if err != nil {
			fmt.Fprintf(os.Stderr, "go-jwt: fetch: %v\n", err)
			os.Exit(1)
		}
		fmt.Println(svid.Marshal())
	case "validate":
		if flags.NArg() != 1 {
			fmt.Fprintln(os.Stderr, "go-jwt: validate takes one TOKEN")
			os.Exit(2)
		}
		bundles, err := client.FetchJWTBundles(ctx)
		if err != nil {
			fmt.Fprintf(os.Stderr, "go-jwt: bundles: %v\n", err)
			os.Exit(1)
		}
		svid, err := jwtsvid.ParseAndValidate(flags.Arg(0), bundles, []string{*audience})
		if err != nil {
			fmt.Fprintf(os.Stderr, "go-jwt: invalid: %v\n", err)
			os.Exit(1)
		}
		fmt.Printf("valid %s\n", svid.ID)
	default:
		fmt.Fprintf(os.Stderr, "go-jwt: unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
}
