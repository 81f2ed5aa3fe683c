module flotilla.dev/hack/runc-capstrip

go 1.22
