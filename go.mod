module github.com/dibs-io/dibs

go 1.26.0

require (
	github.com/failsafe-go/failsafe-go v0.9.8
	golang.org/x/time v0.16.0
)

require github.com/bits-and-blooms/bitset v1.24.4 // indirect
