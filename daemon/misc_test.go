package daemon

import (
	"bufio"
	"crypto/tls"
	"net"
	"net/http"
)

func tlsClient(c net.Conn, tr *http.Transport) net.Conn {
	conf := tr.TLSClientConfig.Clone()
	conf.ServerName = "127.0.0.1"
	return tls.Client(c, conf)
}

func bufioReader(c net.Conn) *bufio.Reader { return bufio.NewReader(c) }
