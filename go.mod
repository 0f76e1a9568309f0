module github.com/dibs-io/dibs

go 1.26.0

require github.com/anishathalye/porcupine v1.3.1
