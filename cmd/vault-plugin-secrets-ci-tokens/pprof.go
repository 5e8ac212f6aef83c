//go:build pprof

package main

import (
	"net"
	"net/http"
	_ "net/http/pprof" // registers the /debug/pprof handlers on http.DefaultServeMux
	"os"

	hclog "github.com/hashicorp/go-hclog"
)

// pprofAddrVariable names the environment variable that holds the loopback
// address on which a plugin built with -tags pprof serves net/http/pprof.
// Vault passes it from the plugin's catalog entry (the env parameter).
// Release builds leave this file out, so they never listen.
const pprofAddrVariable = "CI_TOKENS_PPROF_ADDR"

func init() {
	addr := os.Getenv(pprofAddrVariable)
	if addr == "" {
		return
	}
	logger := hclog.New(&hclog.LoggerOptions{Name: "pprof"})
	host, _, err := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		logger.Error("not serving pprof: the address must be a loopback IP and a port, such as 127.0.0.1:6060", "variable", pprofAddrVariable, "address", addr)
		return
	}
	listener, err := net.Listen("tcp", addr)
	if err != nil {
		logger.Error("not serving pprof", "address", addr, "error", err)
		return
	}
	go func() {
		err := http.Serve(listener, nil)
		logger.Error("pprof server stopped", "error", err)
	}()
}
