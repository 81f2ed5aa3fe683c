module flotilla.dev/hack/pause

go 1.22
