# The consilium binary in a small image. Not exercised by CI here (no Docker
# engine on the CI machine); kept consistent with the configuration the code
# reads (see README, "Running against MinIO").
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/consilium ./cmd/consilium

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/consilium /usr/local/bin/consilium
USER nonroot
EXPOSE 8443
ENTRYPOINT ["/usr/local/bin/consilium"]
CMD ["serve"]
