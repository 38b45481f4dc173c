package cases

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/consilium/consilium/storage"
)

// PacketInfo describes a stored packet: already age-encrypted to its
// specialist, kept so that downloads resume and repeat without a rebuild.
type PacketInfo struct {
	Size int64
	// Tag identifies the build; it is the packet's ETag.
	Tag string
}

// packetName is the packet of a case for a specialist under release seq.
func packetName(caseID, specialist string, seq int) string {
	return packetPrefix + caseID + "/" + specialist + "/" + strconv.Itoa(seq)
}

const tagKey = "build"

// PutPacket stores a packet read from r, under build tag tag. A packet
// already stored for the same release is kept (the first build wins).
func (st *Store) PutPacket(ctx context.Context, caseID, specialist string, seq int, tag string, r io.Reader) (PacketInfo, error) {
	if !ValidID(caseID) || !validPrincipalID(specialist) {
		return PacketInfo{}, fmt.Errorf("%w: packet of %q on %q", ErrInvalid, specialist, caseID)
	}
	info, err := st.packets.Put(ctx, packetName(caseID, specialist, seq), r, storage.PutOptions{
		IfAbsent: true, ContentType: "application/octet-stream", Metadata: map[string]string{tagKey: tag},
	})
	if errors.Is(err, storage.ErrExists) {
		return st.StatPacket(ctx, caseID, specialist, seq)
	}
	if err != nil {
		return PacketInfo{}, fmt.Errorf("cases: storing a packet: %w", err)
	}
	return PacketInfo{Size: info.Size, Tag: tag}, nil
}

// StatPacket returns the stored packet's info, or ErrNotFound.
func (st *Store) StatPacket(ctx context.Context, caseID, specialist string, seq int) (PacketInfo, error) {
	if !ValidID(caseID) || !validPrincipalID(specialist) {
		return PacketInfo{}, ErrNotFound
	}
	info, err := st.packets.Stat(ctx, packetName(caseID, specialist, seq))
	if errors.Is(err, storage.ErrNotFound) {
		return PacketInfo{}, ErrNotFound
	}
	if err != nil {
		return PacketInfo{}, fmt.Errorf("cases: reading a packet: %w", err)
	}
	return PacketInfo{Size: info.Size, Tag: info.Metadata[tagKey]}, nil
}

// OpenPacket streams length bytes (0: to the end) of a stored packet
// from offset.
func (st *Store) OpenPacket(ctx context.Context, caseID, specialist string, seq int, offset, length int64) (io.ReadCloser, error) {
	rc, _, err := st.packets.Get(ctx, packetName(caseID, specialist, seq), storage.GetOptions{Offset: offset, Length: length})
	if errors.Is(err, storage.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("cases: reading a packet: %w", err)
	}
	return rc, nil
}
