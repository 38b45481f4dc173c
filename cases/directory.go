package cases

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"slices"
	"strings"
	"time"

	"filippo.io/age"

	"github.com/consilium/consilium/storage"
)

// Specialist is a directory entry: who a specialist is (from its client
// certificate) and the age recipient its packets are encrypted to.
type Specialist struct {
	ID        string    `json:"id"`
	Org       string    `json:"org"`
	Country   string    `json:"country"`
	Specialty string    `json:"specialty"`
	Languages []string  `json:"languages"`
	Recipient string    `json:"recipient"`
	Updated   time.Time `json:"updated"`
}

// Directory is the specialist directory, kept in a storage.Store.
type Directory struct {
	s storage.Store
}

// NewDirectory returns the directory kept in s.
func NewDirectory(s storage.Store) *Directory { return &Directory{s: s} }

// validPrincipalID bounds the principal ids that name objects.
func validPrincipalID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return id != "." && id != ".."
}

// Register stores or replaces sp. Its recipient must be an age X25519
// recipient ("age1...").
func (d *Directory) Register(ctx context.Context, sp Specialist) error {
	if !validPrincipalID(sp.ID) {
		return fmt.Errorf("%w: principal id %q", ErrInvalid, sp.ID)
	}
	if _, err := age.ParseX25519Recipient(sp.Recipient); err != nil {
		return fmt.Errorf("%w: the recipient is not an age X25519 recipient (age1...): %v", ErrInvalid, err)
	}
	if sp.Languages == nil {
		sp.Languages = []string{}
	}
	return putJSON(ctx, d.s, directoryPrefix+sp.ID, sp)
}

// Get returns the entry of id, or ErrNotFound.
func (d *Directory) Get(ctx context.Context, id string) (Specialist, error) {
	var sp Specialist
	if !validPrincipalID(id) {
		return sp, ErrNotFound
	}
	_, err := readJSON(ctx, d.s, directoryPrefix+id, &sp)
	return sp, err
}

// Search yields the specialists with the specialty and speaking the
// language (either empty: any), sorted by id.
func (d *Directory) Search(ctx context.Context, specialty, language string) ([]Specialist, error) {
	var out []Specialist
	for sp, err := range d.all(ctx) {
		if err != nil {
			return nil, err
		}
		if specialty != "" && !strings.EqualFold(sp.Specialty, specialty) {
			continue
		}
		if language != "" && !slices.ContainsFunc(sp.Languages, func(l string) bool { return strings.EqualFold(l, language) }) {
			continue
		}
		out = append(out, sp)
	}
	slices.SortFunc(out, func(a, b Specialist) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

func (d *Directory) all(ctx context.Context) iter.Seq2[Specialist, error] {
	return func(yield func(Specialist, error) bool) {
		for info, err := range d.s.List(ctx, directoryPrefix) {
			if err != nil {
				yield(Specialist{}, fmt.Errorf("cases: listing the directory: %w", err))
				return
			}
			sp, err := d.Get(ctx, strings.TrimPrefix(info.Name, directoryPrefix))
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if !yield(sp, err) || err != nil {
				return
			}
		}
	}
}
