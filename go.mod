module github.com/nbdmirror/nbdmirror

go 1.26.8

require github.com/pojntfx/go-nbd v0.3.2
