module github.com/dibs-io/dibs

go 1.26.0
