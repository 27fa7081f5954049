module kcpsession/interop

go 1.24.0
