//go:build unix

package loadgen

import "syscall"

// peerClosed reports whether the server closed c while it was idle, as a
// server does with keep-alive connections it no longer wants, or a node
// that goes down: a request written on it would fail although the server
// never read it. net/http's client learns it from a goroutine reading
// every idle connection; one non-blocking peek costs less.
func (c *wireConn) peerClosed() bool {
	if c.br.Buffered() > 0 {
		return true // bytes nobody asked for: the stream is out of step
	}
	if c.raw == nil {
		return false
	}
	if c.peek == nil {
		c.peek = func(fd uintptr) bool {
			// Without an error it read 0 bytes (the end of the stream)
			// or bytes nobody asked for: either way the connection is
			// done.
			_, _, err := syscall.Recvfrom(int(fd), c.peekBuf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			c.peekClosed = err == nil || err != syscall.EAGAIN && err != syscall.EINTR
			return true
		}
	}
	err := c.raw.Read(c.peek)
	return c.peekClosed || err != nil
}
