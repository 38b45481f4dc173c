package storage

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"iter"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// MinIOConfig says where the MinIO (or other S3) bucket is. The process
// builds it in cmd from flags and environment; secrets come from files or
// the environment, never flags.
type MinIOConfig struct {
	// Endpoint is host:port of the server, without a scheme.
	Endpoint string
	// AccessKey and SecretKey are the credentials.
	AccessKey string
	SecretKey string
	// Bucket is created if it does not exist.
	Bucket string
	// Prefix, when set, is put before every object name, so that several
	// stores can share a bucket. It must end in "/" (e.g. "consilium/").
	Prefix string
	// UseTLS makes the connection HTTPS.
	UseTLS bool
	// CAFile, when set, is a PEM file of the CA certificates to trust for
	// the server instead of the system roots.
	CAFile string
	// Region is the bucket's region; empty lets the server decide.
	Region string
	// ObjectLock asks for a bucket with S3 object lock, so that
	// PutOptions.Retention is enforced by the server (WORM). A new bucket
	// is created with it; an existing bucket without it is refused.
	ObjectLock bool
}

// Validate reports the first problem with the configuration.
func (c MinIOConfig) Validate() error {
	switch {
	case c.Endpoint == "":
		return errors.New("storage: minio: endpoint is required")
	case strings.Contains(c.Endpoint, "://") || strings.Contains(c.Endpoint, "/"):
		return fmt.Errorf("storage: minio: endpoint %q must be host:port, without scheme or path", c.Endpoint)
	case c.AccessKey == "" || c.SecretKey == "":
		return errors.New("storage: minio: access key and secret key are required")
	case c.Bucket == "":
		return errors.New("storage: minio: bucket is required")
	case c.CAFile != "" && !c.UseTLS:
		return errors.New("storage: minio: a CA file needs UseTLS")
	}
	if l := len(c.Bucket); l < 3 || l > 63 {
		return fmt.Errorf("storage: minio: bucket name %q must be 3 to 63 bytes", c.Bucket)
	}
	for i := 0; i < len(c.Bucket); i++ {
		if b := c.Bucket[i]; !('a' <= b && b <= 'z' || '0' <= b && b <= '9' || b == '-' || b == '.') {
			return fmt.Errorf("storage: minio: bucket name %q may hold only a-z, 0-9, '-' and '.'", c.Bucket)
		}
	}
	if c.Prefix != "" {
		if !strings.HasSuffix(c.Prefix, "/") || ValidName(strings.TrimSuffix(c.Prefix, "/")) != nil {
			return fmt.Errorf("storage: minio: prefix %q must be a valid name followed by '/'", c.Prefix)
		}
	}
	return nil
}

// Default upload tuning of the MinIO backend (see [WithPartSize] and
// [WithUploadConcurrency]). A large Put holds at most concurrency part
// buffers (24 MiB by default), whatever the object's size; with 8 MiB
// parts an object of unknown size can reach 10,000 parts, about 78 GiB
// (a known size picks a larger part when needed). A 1 GiB streaming Put
// stays near 32 MiB of heap; 3 x 16 MiB reached 97 MiB, because the
// garbage collector lets the heap grow to twice what is live.
const (
	DefaultPartSize          = 8 << 20
	DefaultUploadConcurrency = 3
	// smallBuffer is what a Put reads first; objects that fit never
	// touch a part buffer.
	smallBuffer = 64 << 10
	maxParts    = 10000
	// minPartSize is S3's smallest part (but for the last).
	minPartSize = 5 << 20
)

// MinIO is a [Store] in a MinIO (S3) bucket.
//
// Puts stream: objects up to one part are sent with a single PUT, larger
// ones (or ones of unknown size that turn out larger) as a multipart
// upload with a fixed number of part buffers in flight. The single PUT
// and each part carry a CRC-32C that the server verifies (see
// singleOptions and partOptions). IfAbsent and
// IfMatch travel as If-None-Match: * and If-Match headers on the single
// PUT, or on CompleteMultipartUpload, which MinIO checks under its
// namespace lock, so they are race-free for objects of any size.
// (minio-go's own PutObject drops those headers from
// CompleteMultipartUpload, which is why this backend drives multipart
// uploads itself.)
//
// On a bucket with object lock, the bucket is versioned: Delete removes
// every version of the name (refusing with ErrLocked while the current one
// is retained), and Put refuses to overwrite a retained object, so both
// backends behave alike. Overwrites leave the old version as a
// noncurrent version until it is deleted.
type MinIO struct {
	client      *minio.Client
	core        minio.Core
	cfg         MinIOConfig
	log         *slog.Logger
	partSize    int64
	concurrency int
	parts       sync.Pool
}

var (
	_ Store           = (*MinIO)(nil)
	_ MetadataUpdater = (*MinIO)(nil)
)

// MinIOOption configures [NewMinIO].
type MinIOOption func(*MinIO)

// WithMinIOLogger sets the logger (the default discards).
func WithMinIOLogger(l *slog.Logger) MinIOOption {
	return func(m *MinIO) { m.log = l.With("component", "storage.minio") }
}

// WithPartSize sets the multipart upload part size (default
// [DefaultPartSize], at least 5 MiB). Objects of unknown size can be at
// most 10,000 parts.
func WithPartSize(n int64) MinIOOption {
	return func(m *MinIO) { m.partSize = n }
}

// WithUploadConcurrency sets how many parts of one Put are uploaded at
// once (default [DefaultUploadConcurrency]).
func WithUploadConcurrency(n int) MinIOOption {
	return func(m *MinIO) { m.concurrency = n }
}

// NewMinIO connects to the server and makes sure the bucket exists (with
// object lock when cfg.ObjectLock is set).
func NewMinIO(ctx context.Context, cfg MinIOConfig, opts ...MinIOOption) (*MinIO, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m := &MinIO{cfg: cfg, log: slog.New(slog.DiscardHandler), partSize: DefaultPartSize, concurrency: DefaultUploadConcurrency}
	for _, o := range opts {
		o(m)
	}
	if m.partSize < minPartSize {
		return nil, fmt.Errorf("storage: minio: part size %d is below S3's minimum of %d", m.partSize, minPartSize)
	}
	if m.concurrency < 1 {
		return nil, fmt.Errorf("storage: minio: upload concurrency %d", m.concurrency)
	}
	m.parts.New = func() any { b := make([]byte, m.partSize); return &b }
	transport, err := minio.DefaultTransport(cfg.UseTLS)
	if err != nil {
		return nil, fmt.Errorf("storage: minio: %w", err)
	}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("storage: minio: read CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("storage: minio: no certificate in CA file %s", cfg.CAFile)
		}
		transport.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	client, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:     credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure:    cfg.UseTLS,
		Region:    cfg.Region,
		Transport: transport,
	})
	if err != nil {
		return nil, fmt.Errorf("storage: minio: %w", err)
	}
	m.client, m.core = client, minio.Core{Client: client}
	if err := m.ensureBucket(ctx); err != nil {
		return nil, fmt.Errorf("storage: minio: bucket %s: %w", cfg.Bucket, err)
	}
	return m, nil
}

func (m *MinIO) ensureBucket(ctx context.Context) error {
	exists, err := m.client.BucketExists(ctx, m.cfg.Bucket)
	if err != nil {
		return err
	}
	if !exists {
		err := m.client.MakeBucket(ctx, m.cfg.Bucket, minio.MakeBucketOptions{Region: m.cfg.Region, ObjectLocking: m.cfg.ObjectLock})
		var er minio.ErrorResponse
		if err != nil && !(errors.As(err, &er) && er.Code == "BucketAlreadyOwnedByYou") {
			return err
		}
		if err == nil {
			m.log.Info("created bucket", "bucket", m.cfg.Bucket, "object_lock", m.cfg.ObjectLock)
			return nil
		}
	}
	if !m.cfg.ObjectLock {
		return nil
	}
	enabled, _, _, _, err := m.client.GetObjectLockConfig(ctx, m.cfg.Bucket)
	if err != nil {
		var er minio.ErrorResponse
		if errors.As(err, &er) && er.Code == "ObjectLockConfigurationNotFoundError" {
			enabled = ""
		} else {
			return fmt.Errorf("read object lock configuration: %w", err)
		}
	}
	if enabled != "Enabled" {
		return errors.New("object lock was asked for but the existing bucket was created without it " +
			"(S3 can only enable object lock when a bucket is created: use a new bucket)")
	}
	return nil
}

// Client returns the underlying minio-go client (for tests and tools).
func (m *MinIO) Client() *minio.Client { return m.client }

// Bucket returns the bucket's name.
func (m *MinIO) Bucket() string { return m.cfg.Bucket }

// Prefix returns the prefix put before every object name in the bucket
// (MinIOConfig.Prefix), for tools that address the bucket directly.
func (m *MinIO) Prefix() string { return m.cfg.Prefix }

func (m *MinIO) key(name string) string { return m.cfg.Prefix + name }

// translate turns a minio-go error into one wrapping this package's
// sentinels where one applies.
func translate(err error) error {
	var er minio.ErrorResponse
	if !errors.As(err, &er) {
		return err
	}
	switch er.Code {
	case "NoSuchKey", "NoSuchVersion":
		return fmt.Errorf("%w (%s)", ErrNotFound, er.Code)
	case "PreconditionFailed":
		return fmt.Errorf("%w (%s)", ErrPreconditionFailed, er.Code)
	case "InvalidRange":
		return fmt.Errorf("%w (%s)", ErrInvalidRange, er.Code)
	case "ObjectLocked":
		return fmt.Errorf("%w (%s)", ErrLocked, er.Code)
	case "AccessDenied", "InvalidRequest":
		// MinIO refuses to delete a retained version with InvalidRequest
		// ("Object is WORM protected and cannot be overwritten"); S3 says
		// AccessDenied.
		msg := strings.ToLower(er.Message)
		if strings.Contains(msg, "worm") || strings.Contains(msg, "retention") || strings.Contains(msg, "lock") {
			return fmt.Errorf("%w (%s: %s)", ErrLocked, er.Code, er.Message)
		}
	}
	return err
}

func (m *MinIO) info(name string, oi minio.ObjectInfo, size int64) Info {
	meta := make(map[string]string, len(oi.UserMetadata))
	for k, v := range oi.UserMetadata {
		meta[strings.ToLower(k)] = v
	}
	return Info{
		Name:        name,
		Size:        size,
		ModTime:     oi.LastModified,
		ETag:        oi.ETag,
		ContentType: contentTypeOrDefault(oi.ContentType),
		Metadata:    meta,
	}
}

// retainedUntil returns when the retention of the version described by
// oi ends, or the zero time if it has none.
func retainedUntil(oi minio.ObjectInfo) time.Time {
	if oi.Metadata.Get("X-Amz-Object-Lock-Mode") == "" {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339, oi.Metadata.Get("X-Amz-Object-Lock-Retain-Until-Date"))
	if err != nil {
		// A mode without a readable date: treat as retained for good.
		return time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	return t
}

// checkNotRetained returns ErrLocked if the current version of key is
// under retention. Only buckets with object lock can have retention.
func (m *MinIO) checkNotRetained(ctx context.Context, key string) error {
	if !m.cfg.ObjectLock {
		return nil
	}
	oi, err := m.client.StatObject(ctx, m.cfg.Bucket, key, minio.StatObjectOptions{})
	if err != nil {
		if err := translate(err); errors.Is(err, ErrNotFound) {
			return nil
		}
		return translate(err)
	}
	if time.Now().Before(retainedUntil(oi)) {
		return ErrLocked
	}
	return nil
}

// Put implements [Store.Put].
func (m *MinIO) Put(ctx context.Context, name string, r io.Reader, opts PutOptions) (Info, error) {
	if err := checkPut(name, opts); err != nil {
		return Info{}, err
	}
	key := m.key(name)
	if !opts.IfAbsent {
		// Versioned (object-lock) buckets would accept the overwrite as
		// a new version; refuse it as the filesystem backend does.
		if err := m.checkNotRetained(ctx, key); err != nil {
			return Info{}, fmt.Errorf("storage: put %s: %w", name, err)
		}
	}
	po := minio.PutObjectOptions{
		ContentType:  contentTypeOrDefault(opts.ContentType),
		UserMetadata: opts.Metadata,
	}
	if ret := opts.Retention; ret != nil {
		po.Mode = minio.RetentionMode(ret.Mode)
		po.RetainUntilDate = ret.Until.UTC()
	}
	cond := minio.PutObjectOptions{}
	switch {
	case opts.IfAbsent:
		cond.SetMatchETagExcept("*")
		po.SetMatchETagExcept("*")
	case opts.IfMatch != "":
		cond.SetMatchETag(opts.IfMatch)
		po.SetMatchETag(opts.IfMatch)
	}
	ui, size, err := m.upload(ctx, key, r, opts.Size, po, cond)
	if err != nil {
		err = translate(err)
		switch {
		case opts.IfAbsent && errors.Is(err, ErrPreconditionFailed):
			err = fmt.Errorf("%w (%w)", ErrExists, err)
		case opts.IfMatch != "" && errors.Is(err, ErrNotFound):
			err = fmt.Errorf("%w (%w)", ErrPreconditionFailed, err)
		}
		return Info{}, fmt.Errorf("storage: put %s: %w", name, err)
	}
	mod := ui.LastModified
	if mod.IsZero() {
		mod = time.Now().UTC()
	}
	return Info{
		Name: name, Size: size, ModTime: mod, ETag: ui.ETag,
		ContentType: po.ContentType, Metadata: cloneMeta(opts.Metadata),
	}, nil
}

// readFull reads into buf until it is full or r ends; eof reports the
// end of r.
func readFull(ctx context.Context, r io.Reader, buf []byte) (n int, eof bool, err error) {
	n, err = io.ReadFull(contextReader{ctx, r}, buf)
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return n, true, nil
	case err != nil:
		return n, false, fmt.Errorf("read source: %w", err)
	}
	return n, false, nil
}

// upload streams r to key: a single PUT when it fits one part, else a
// multipart upload. po goes with the PUT or the multipart initiation;
// cond (the conditional headers only) goes with the completion.
func (m *MinIO) upload(ctx context.Context, key string, r io.Reader, want int64, po, cond minio.PutObjectOptions) (minio.UploadInfo, int64, error) {
	partSize := m.partSize
	if want > 0 && (want+partSize-1)/partSize > maxParts {
		partSize = (want + maxParts - 1) / maxParts
	}
	first := make([]byte, min(smallBuffer, partSize))
	if want > 0 && want < partSize {
		// A known size that fits one part: read it into a buffer of
		// exactly that size, plus one byte to see an overlong source,
		// rather than a part buffer (a fresh 8 MiB, zeroed, on most
		// Puts: sync.Pool loses its buffers at every collection).
		first = make([]byte, want+1)
	}
	n, eof, err := readFull(ctx, r, first)
	if err != nil {
		return minio.UploadInfo{}, 0, err
	}
	if want > 0 && int64(n) > want {
		return minio.UploadInfo{}, 0, fmt.Errorf("source gave more than the %d bytes announced", want)
	}
	if !eof && int64(n) < partSize {
		// More than the small buffer: continue into a part buffer.
		buf := m.partBuf(partSize)
		copy(*buf, first[:n])
		var nn int
		nn, eof, err = readFull(ctx, r, (*buf)[n:])
		n += nn
		if err != nil {
			m.parts.Put(buf)
			return minio.UploadInfo{}, 0, err
		}
		if !eof {
			return m.multipart(ctx, key, r, want, partSize, buf, n, po, cond)
		}
		defer m.parts.Put(buf)
		first = *buf
	}
	if want > 0 && int64(n) != want {
		return minio.UploadInfo{}, 0, fmt.Errorf("source gave %d bytes or more, not the %d announced", n, want)
	}
	ui, err := m.core.PutObject(ctx, m.cfg.Bucket, key, bytes.NewReader(first[:n]), int64(n), "", "", singleOptions(po, first[:n]))
	return ui, int64(n), err
}

// singleOptions protects a single PUT as partOptions does a part: with
// a CRC-32C of the body that the server verifies before storing it,
// sent in a signed header, instead of minio-go's default on plain HTTP
// of a streaming signature (an HMAC-SHA-256 chain over every 64 KiB
// chunk, for the client to compute and the server to check). Over TLS
// minio-go sends the payload unsigned anyway; the checksum then adds the
// same server-side check.
func singleOptions(po minio.PutObjectOptions, body []byte) minio.PutObjectOptions {
	var sum [4]byte
	binary.BigEndian.PutUint32(sum[:], crc32.Checksum(body, castagnoli))
	meta := make(map[string]string, len(po.UserMetadata)+1)
	for k, v := range po.UserMetadata {
		meta[k] = v
	}
	// minio-go sends x-amz-checksum-* keys of UserMetadata as headers, not
	// as x-amz-meta-*.
	meta["X-Amz-Checksum-Crc32c"] = base64.StdEncoding.EncodeToString(sum[:])
	po.UserMetadata = meta
	po.DisableContentSha256 = true
	return po
}

func (m *MinIO) partBuf(size int64) *[]byte {
	if size == m.partSize {
		return m.parts.Get().(*[]byte)
	}
	b := make([]byte, size)
	return &b
}

type partJob struct {
	num int
	buf *[]byte
	n   int
}

// multipart uploads the part already read into buf (n bytes) and the
// rest of r. At most m.concurrency part buffers exist at a time.
func (m *MinIO) multipart(ctx context.Context, key string, r io.Reader, want, partSize int64,
	buf *[]byte, n int, po, cond minio.PutObjectOptions,
) (ui minio.UploadInfo, total int64, err error) {
	uploadID, err := m.core.NewMultipartUpload(ctx, m.cfg.Bucket, key, po)
	if err != nil {
		m.parts.Put(buf)
		return ui, 0, err
	}
	defer func() {
		if err != nil {
			// Abort even when ctx is cancelled, so no parts linger.
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			if aerr := m.core.AbortMultipartUpload(actx, m.cfg.Bucket, key, uploadID); aerr != nil {
				m.log.Warn("abort multipart upload", "upload_id", uploadID, "err", aerr)
			}
		}
	}()
	uctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	jobs := make(chan partJob)
	free := make(chan *[]byte, m.concurrency)
	var (
		mu    sync.Mutex
		parts []minio.CompletePart
		wg    sync.WaitGroup
	)
	for range m.concurrency {
		wg.Go(func() {
			for j := range jobs {
				part := (*j.buf)[:j.n]
				p, err := m.core.PutObjectPart(uctx, m.cfg.Bucket, key, uploadID, j.num,
					bytes.NewReader(part), int64(j.n), partOptions(part))
				free <- j.buf
				if err != nil {
					cancel(fmt.Errorf("upload part %d: %w", j.num, err))
					continue
				}
				mu.Lock()
				parts = append(parts, minio.CompletePart{
					PartNumber: p.PartNumber, ETag: p.ETag,
					ChecksumCRC32: p.ChecksumCRC32, ChecksumCRC32C: p.ChecksumCRC32C,
					ChecksumSHA1: p.ChecksumSHA1, ChecksumSHA256: p.ChecksumSHA256,
					ChecksumCRC64NVME: p.ChecksumCRC64NVME,
				})
				mu.Unlock()
			}
		})
	}
	buffers, num, eof := 1, 1, false
	total = int64(n)
	for {
		// buf holds part num (n bytes), not yet handed to a worker.
		select {
		case jobs <- partJob{num, buf, n}:
		case <-uctx.Done():
			free <- buf
		}
		buf = nil
		if eof || uctx.Err() != nil {
			break
		}
		if num >= maxParts {
			cancel(fmt.Errorf("object larger than %d parts of %d bytes", maxParts, partSize))
			break
		}
		// Reuse a buffer a worker is done with, or make one more while
		// fewer than m.concurrency exist.
		if buffers < m.concurrency && len(free) == 0 {
			buffers++
			buf = m.partBuf(partSize)
		} else {
			select {
			case buf = <-free:
			case <-uctx.Done():
			}
		}
		if buf == nil {
			break
		}
		n, eof, err = readFull(uctx, r, (*buf)[:partSize])
		total += int64(n)
		if err == nil && want > 0 && total > want {
			err = fmt.Errorf("source gave more than the %d bytes announced", want)
		}
		if err != nil {
			cancel(err)
			free <- buf
			break
		}
		if n == 0 {
			free <- buf // the previous part was the last
			break
		}
		num++
	}
	close(jobs)
	wg.Wait()
	for range buffers {
		if b := <-free; int64(len(*b)) == m.partSize {
			m.parts.Put(b)
		}
	}
	if err := context.Cause(uctx); err != nil {
		return ui, 0, err
	}
	if want > 0 && total != want {
		return ui, 0, fmt.Errorf("source gave %d bytes, not the %d announced", total, want)
	}
	slices.SortFunc(parts, func(a, b minio.CompletePart) int { return a.PartNumber - b.PartNumber })
	ui, err = m.core.CompleteMultipartUpload(ctx, m.cfg.Bucket, key, uploadID, parts, cond)
	return ui, total, err
}

// castagnoli is the CRC-32C table (hardware-accelerated on amd64 and
// arm64).
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// partOptions protects a part with a CRC-32C checksum that the server
// verifies before accepting it, instead of minio-go's default on plain
// HTTP of signing every 64 KiB chunk with SHA-256: the same write-time
// integrity for a twentieth of the CPU. The checksum header is itself
// covered by the request signature.
func partOptions(part []byte) minio.PutObjectPartOptions {
	var sum [4]byte
	binary.BigEndian.PutUint32(sum[:], crc32.Checksum(part, castagnoli))
	h := http.Header{}
	h.Set("X-Amz-Checksum-Crc32c", base64.StdEncoding.EncodeToString(sum[:]))
	return minio.PutObjectPartOptions{CustomHeader: h, DisableContentSha256: true}
}

// Get implements [Store.Get].
func (m *MinIO) Get(ctx context.Context, name string, opts GetOptions) (io.ReadCloser, Info, error) {
	if err := ValidName(name); err != nil {
		return nil, Info{}, err
	}
	if opts.Offset < 0 || opts.Length < 0 {
		return nil, Info{}, fmt.Errorf("storage: get %s: %w: negative offset or length", name, ErrInvalidRange)
	}
	rc, info, err := m.get(ctx, name, opts)
	if err != nil {
		return nil, Info{}, fmt.Errorf("storage: get %s: %w", name, err)
	}
	return rc, info, nil
}

// get opens the object, or the given range of it.
func (m *MinIO) get(ctx context.Context, name string, opts GetOptions) (io.ReadCloser, Info, error) {
	key := m.key(name)
	var gopts minio.GetObjectOptions
	ranged := opts.Offset > 0 || opts.Length > 0
	switch {
	case opts.Length > 0:
		gopts.Set("Range", fmt.Sprintf("bytes=%d-%d", opts.Offset, opts.Offset+opts.Length-1))
	case opts.Offset > 0:
		gopts.Set("Range", fmt.Sprintf("bytes=%d-", opts.Offset))
	}
	body, oi, hdr, err := m.core.GetObject(ctx, m.cfg.Bucket, key, gopts)
	if err != nil {
		err = translate(err)
		if !errors.Is(err, ErrInvalidRange) {
			return nil, Info{}, err
		}
		// S3 refuses a range that starts at the very end; this package
		// returns nothing for it, as for a read at end of file.
		st, serr := m.client.StatObject(ctx, m.cfg.Bucket, key, minio.StatObjectOptions{})
		if serr != nil {
			return nil, Info{}, translate(serr)
		}
		if opts.Offset != st.Size {
			return nil, Info{}, err
		}
		return io.NopCloser(bytes.NewReader(nil)), m.info(name, st, st.Size), nil
	}
	size := oi.Size
	if ranged {
		// Content-Range: bytes first-last/total
		cr := hdr.Get("Content-Range")
		i := strings.LastIndexByte(cr, '/')
		total, perr := strconv.ParseInt(cr[i+1:], 10, 64)
		if i < 0 || perr != nil {
			body.Close()
			return nil, Info{}, fmt.Errorf("unreadable Content-Range %q", cr)
		}
		size = total
	}
	return body, m.info(name, oi, size), nil
}

// Stat implements [Store.Stat].
func (m *MinIO) Stat(ctx context.Context, name string) (Info, error) {
	if err := ValidName(name); err != nil {
		return Info{}, err
	}
	oi, err := m.client.StatObject(ctx, m.cfg.Bucket, m.key(name), minio.StatObjectOptions{})
	if err != nil {
		return Info{}, fmt.Errorf("storage: stat %s: %w", name, translate(err))
	}
	return m.info(name, oi, oi.Size), nil
}

// List implements [Store.List]. Listing asks MinIO for metadata with
// each object (a MinIO extension to S3), so it costs no request per
// object.
func (m *MinIO) List(ctx context.Context, prefix string) iter.Seq2[Info, error] {
	return func(yield func(Info, error) bool) {
		if err := ValidPrefix(prefix); err != nil {
			yield(Info{}, err)
			return
		}
		lctx, cancel := context.WithCancel(ctx)
		defer cancel()
		for oi := range m.client.ListObjects(lctx, m.cfg.Bucket, minio.ListObjectsOptions{
			Prefix: m.key(prefix), Recursive: true, WithMetadata: true,
		}) {
			if oi.Err != nil {
				yield(Info{}, fmt.Errorf("storage: list %s: %w", prefix, translate(oi.Err)))
				return
			}
			name := strings.TrimPrefix(oi.Key, m.cfg.Prefix)
			if ValidName(name) != nil {
				continue // not written through this package
			}
			info := Info{Name: name, Size: oi.Size, ModTime: oi.LastModified, ETag: oi.ETag, Metadata: map[string]string{}}
			for k, v := range oi.UserMetadata {
				lk := strings.ToLower(k)
				if mk, ok := strings.CutPrefix(lk, "x-amz-meta-"); ok {
					info.Metadata[mk] = v
				} else if lk == "content-type" {
					info.ContentType = v
				}
			}
			if info.ContentType == "" {
				info.ContentType = oi.ContentType
			}
			info.ContentType = contentTypeOrDefault(info.ContentType)
			if !yield(info, nil) {
				return
			}
		}
	}
}

// Delete implements [Store.Delete].
func (m *MinIO) Delete(ctx context.Context, name string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	var err error
	if m.cfg.ObjectLock {
		err = m.deleteVersions(ctx, m.key(name))
	} else {
		err = m.deleteOne(ctx, m.key(name))
	}
	if err != nil {
		return fmt.Errorf("storage: delete %s: %w", name, err)
	}
	return nil
}

func (m *MinIO) deleteOne(ctx context.Context, key string) error {
	// S3 deletes of a missing key succeed; this package reports them.
	if _, err := m.client.StatObject(ctx, m.cfg.Bucket, key, minio.StatObjectOptions{}); err != nil {
		return translate(err)
	}
	return translate(m.client.RemoveObject(ctx, m.cfg.Bucket, key, minio.RemoveObjectOptions{}))
}

// deleteVersions removes every version of key in a versioned bucket, so
// that no older version resurfaces. A retained current version refuses
// the whole delete; a retained older version is left behind a delete
// marker.
func (m *MinIO) deleteVersions(ctx context.Context, key string) error {
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var versions []minio.ObjectInfo
	for oi := range m.client.ListObjects(lctx, m.cfg.Bucket, minio.ListObjectsOptions{Prefix: key, WithVersions: true}) {
		if oi.Err != nil {
			return translate(oi.Err)
		}
		if oi.Key == key {
			versions = append(versions, oi)
		}
	}
	latest := slices.IndexFunc(versions, func(oi minio.ObjectInfo) bool { return oi.IsLatest })
	if latest < 0 || versions[latest].IsDeleteMarker {
		return ErrNotFound
	}
	if err := m.client.RemoveObject(ctx, m.cfg.Bucket, key, minio.RemoveObjectOptions{VersionID: versions[latest].VersionID}); err != nil {
		return translate(err)
	}
	kept := false
	for i, v := range versions {
		if i == latest {
			continue
		}
		if err := m.client.RemoveObject(ctx, m.cfg.Bucket, key, minio.RemoveObjectOptions{VersionID: v.VersionID}); err != nil {
			if !errors.Is(translate(err), ErrLocked) {
				return translate(err)
			}
			kept = true
		}
	}
	if kept {
		// Hide the retained older versions behind a delete marker.
		return translate(m.client.RemoveObject(ctx, m.cfg.Bucket, key, minio.RemoveObjectOptions{}))
	}
	return nil
}

// UpdateMetadata implements [MetadataUpdater] with a server-side copy of
// the object onto itself that replaces its metadata: the data does not
// leave the server. The copy is conditional on the ETag read just before
// (or ifMatch), so a concurrent Put is never undone. On a versioned
// (object-lock) bucket the replaced version is then deleted. MinIO
// performs a metadata-only copy of an object onto itself in place,
// whatever its size (the 5 GiB copy limit of S3 applies to AWS, not to
// MinIO).
func (m *MinIO) UpdateMetadata(ctx context.Context, name string, meta map[string]string, ifMatch string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	if err := ValidMetadata("", meta); err != nil {
		return fmt.Errorf("storage: update metadata %s: %w", name, err)
	}
	if err := m.updateMetadata(ctx, name, meta, ifMatch); err != nil {
		return fmt.Errorf("storage: update metadata %s: %w", name, err)
	}
	return nil
}

func (m *MinIO) updateMetadata(ctx context.Context, name string, meta map[string]string, ifMatch string) error {
	key := m.key(name)
	oi, err := m.client.StatObject(ctx, m.cfg.Bucket, key, minio.StatObjectOptions{})
	if err != nil {
		err = translate(err)
		if ifMatch != "" && errors.Is(err, ErrNotFound) {
			return fmt.Errorf("%w (%w)", ErrPreconditionFailed, err)
		}
		return err
	}
	if ifMatch != "" && oi.ETag != ifMatch {
		return ErrPreconditionFailed
	}
	if time.Now().Before(retainedUntil(oi)) {
		return ErrLocked
	}
	src := minio.CopySrcOptions{Bucket: m.cfg.Bucket, Object: key, MatchETag: oi.ETag}
	if m.cfg.ObjectLock {
		src.VersionID = oi.VersionID
	}
	_, err = m.client.CopyObject(ctx,
		minio.CopyDestOptions{
			Bucket: m.cfg.Bucket, Object: key,
			ReplaceMetadata: true, UserMetadata: meta,
			ContentType: contentTypeOrDefault(oi.ContentType),
		},
		src,
	)
	if err != nil {
		return translate(err)
	}
	if m.cfg.ObjectLock && oi.VersionID != "" {
		err := m.client.RemoveObject(ctx, m.cfg.Bucket, key, minio.RemoveObjectOptions{VersionID: oi.VersionID})
		if err != nil {
			return fmt.Errorf("remove replaced version: %w", translate(err))
		}
	}
	return nil
}
