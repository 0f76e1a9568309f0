//go:build !unix

package loadgen

// peerClosed cannot peek without blocking here; a connection the server
// closed while idle fails the request written on it.
func (c *wireConn) peerClosed() bool { return c.br.Buffered() > 0 }
