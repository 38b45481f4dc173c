module github.com/consilium/consilium

go 1.26

require (
	github.com/google/fhir/go v0.7.4 // indirect
	github.com/suyashkumar/dicom v1.1.0 // indirect
	golang.org/x/exp v0.0.0-20240525044651-4c93da0ed11d // indirect
	golang.org/x/text v0.3.8 // indirect
)
