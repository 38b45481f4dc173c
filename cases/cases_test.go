package cases_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/consilium/consilium/cases"
	"github.com/consilium/consilium/internal/miniotest"
	"github.com/consilium/consilium/storage"
)

func TestMain(m *testing.M) { os.Exit(miniotest.Main(m)) }

func TestTransitions(t *testing.T) {
	all := []cases.Status{cases.Draft, cases.Assigned, cases.Released, cases.OpinionReceived, cases.Closed, cases.Cancelled}
	// want[event][from] is the status reached; absent: refused.
	want := map[cases.Event]map[cases.Status]cases.Status{
		cases.EventAssign: {
			cases.Draft: cases.Assigned, cases.Assigned: cases.Assigned,
			cases.Released: cases.Released, cases.OpinionReceived: cases.OpinionReceived,
		},
		cases.EventRelease: {
			cases.Assigned: cases.Released, cases.Released: cases.Released, cases.OpinionReceived: cases.OpinionReceived,
		},
		cases.EventOpinion: {cases.Released: cases.OpinionReceived, cases.OpinionReceived: cases.OpinionReceived},
		cases.EventClose:   {cases.Released: cases.Closed, cases.OpinionReceived: cases.Closed},
		cases.EventCancel: {
			cases.Draft: cases.Cancelled, cases.Assigned: cases.Cancelled,
			cases.Released: cases.Cancelled, cases.OpinionReceived: cases.Cancelled,
		},
	}
	for event, tos := range want {
		for _, from := range all {
			t.Run(fmt.Sprintf("%s from %s", event, from), func(t *testing.T) {
				got, err := cases.Transition(from, event)
				to, ok := tos[from]
				switch {
				case ok && (err != nil || got != to):
					t.Errorf("got %s, %v; want %s", got, err, to)
				case !ok && !errors.Is(err, cases.ErrIllegalTransition):
					t.Errorf("got %s, %v; want refused", got, err)
				}
			})
		}
	}
}

func TestApplyRecordsTimeline(t *testing.T) {
	c := &cases.Case{Status: cases.Draft}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := c.Apply(cases.EventAssign, "cm-ana", at, "assigned dr-okafor"); err != nil {
		t.Fatal(err)
	}
	if err := c.Apply(cases.EventClose, "cm-ana", at, ""); !errors.Is(err, cases.ErrIllegalTransition) {
		t.Fatalf("close an assigned case: %v", err)
	}
	if c.Status != cases.Assigned || len(c.Timeline) != 1 || c.Timeline[0].By != "cm-ana" || !c.Updated.Equal(at) {
		t.Errorf("case: %+v", c)
	}
	c.Deadline = at
	if !c.Overdue(at.Add(time.Second)) || c.Overdue(at) {
		t.Error("overdue")
	}
}

// stores returns the backends every store test runs on.
func stores(t *testing.T) map[string]storage.Store {
	fs, err := storage.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv := miniotest.Start(t)
	m, err := storage.NewMinIO(context.Background(), storage.MinIOConfig{
		Endpoint: srv.Endpoint, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, Bucket: srv.Bucket, UseTLS: srv.UseTLS,
	})
	if err != nil {
		t.Fatal(err)
	}
	kr, err := storage.GenerateKeyring(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]storage.Store{"filesystem": storage.NewEncrypted(fs, kr), "minio": storage.NewEncrypted(m, kr)}
}

func TestStore(t *testing.T) {
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			st := cases.NewStore(s, s)
			c := &cases.Case{ID: cases.NewID(), Org: "st-marys", Patient: "p1", Status: cases.Draft, Assigned: []string{}}
			if err := st.Create(ctx, c); err != nil {
				t.Fatal(err)
			}
			if err := st.Create(ctx, c); err == nil {
				t.Error("a second create with the same id succeeded")
			}
			// Concurrent updates are all kept (compare-and-swap).
			var wg sync.WaitGroup
			for i := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if _, err := st.Update(ctx, c.ID, func(c *cases.Case) error {
						c.Timeline = append(c.Timeline, cases.Entry{Note: fmt.Sprint(i)})
						return nil
					}); err != nil {
						t.Error(err)
					}
				}()
			}
			wg.Wait()
			got, err := st.Get(ctx, c.ID)
			if err != nil || len(got.Timeline) != 8 {
				t.Fatalf("after 8 concurrent updates: %v, %d entries", err, len(got.Timeline))
			}
			if _, err := st.Update(ctx, c.ID, func(c *cases.Case) error { return c.Apply(cases.EventClose, "x", time.Now(), "") }); !errors.Is(err, cases.ErrIllegalTransition) {
				t.Errorf("illegal update: %v", err)
			}
			if _, err := st.Get(ctx, cases.NewID()); !errors.Is(err, cases.ErrNotFound) {
				t.Errorf("unknown case: %v", err)
			}
			if _, err := st.Get(ctx, "../../etc/passwd"); !errors.Is(err, cases.ErrNotFound) {
				t.Errorf("bad id: %v", err)
			}
			n := 0
			for _, err := range st.List(ctx) {
				if err != nil {
					t.Fatal(err)
				}
				n++
			}
			if n != 1 {
				t.Errorf("listed %d cases", n)
			}

			// Opinions: a second one by the same specialist is a new version.
			for v := 1; v <= 2; v++ {
				o := &cases.Opinion{Case: c.ID, Specialist: "dr-okafor", Report: []byte(`{"resourceType":"DiagnosticReport"}`)}
				if err := st.PutOpinion(ctx, o, []byte("%PDF-1.4")); err != nil || o.Version != v {
					t.Fatalf("opinion %d: %v, version %d", v, err, o.Version)
				}
			}
			ops, err := st.Opinions(ctx, c.ID)
			if err != nil || len(ops) != 1 || ops[0].Version != 2 {
				t.Fatalf("opinions: %v %+v", err, ops)
			}
			if pdf, err := st.OpinionPDF(ctx, ops[0]); err != nil || string(pdf) != "%PDF-1.4" {
				t.Errorf("pdf: %q %v", pdf, err)
			}
		})
	}
}

func TestDirectory(t *testing.T) {
	ctx := context.Background()
	fs, err := storage.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := cases.NewDirectory(fs)
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	for _, sp := range []cases.Specialist{
		{ID: "dr-okafor", Specialty: "oncology", Languages: []string{"en"}, Recipient: id.Recipient().String()},
		{ID: "dr-garcia", Specialty: "radiology", Languages: []string{"es", "en"}, Recipient: id.Recipient().String()},
	} {
		if err := d.Register(ctx, sp); err != nil {
			t.Fatal(err)
		}
	}
	for _, bad := range []cases.Specialist{
		{ID: "dr-x", Recipient: "not-a-recipient"},
		{ID: "../x", Recipient: id.Recipient().String()},
	} {
		if err := d.Register(ctx, bad); !errors.Is(err, cases.ErrInvalid) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
	for _, tc := range []struct {
		specialty, language string
		want                []string
	}{
		{"", "", []string{"dr-garcia", "dr-okafor"}},
		{"oncology", "", []string{"dr-okafor"}},
		{"", "ES", []string{"dr-garcia"}},
		{"radiology", "en", []string{"dr-garcia"}},
		{"cardiology", "", nil},
	} {
		got, err := d.Search(ctx, tc.specialty, tc.language)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, sp := range got {
			ids = append(ids, sp.ID)
		}
		if fmt.Sprint(ids) != fmt.Sprint(tc.want) {
			t.Errorf("search %q %q: %v, want %v", tc.specialty, tc.language, ids, tc.want)
		}
	}
}
