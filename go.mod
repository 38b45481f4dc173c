module github.com/consilium/consilium

go 1.26
