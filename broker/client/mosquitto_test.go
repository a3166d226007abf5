package client

import (
	"context"
	"testing"
	"time"

	"gatewayd/internal/testenv"
	"gatewayd/internal/testmosquitto"
)

// startMosquitto starts mosquitto -v with a plain listener on a free port,
// anonymous clients allowed, and the extra configuration lines given (which
// may name files in its Dir).
func startMosquitto(t *testing.T, extra string) *testmosquitto.Broker {
	t.Helper()
	return testmosquitto.Start(t, testmosquitto.Options{Config: "allow_anonymous true\n" + extra, Verbose: true})
}

// testCtx is a context bounding one step of a test, so that a broken
// implementation fails instead of hanging.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Scale(20*time.Second))
	t.Cleanup(cancel)
	return ctx
}

// connect makes a client with opts and connects it; it is disconnected when
// the test ends.
func connect(t *testing.T, opts Options) *Client {
	t.Helper()
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Connect(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testenv.Scale(10*time.Second))
		defer cancel()
		c.Disconnect(ctx)
	})
	return c
}

// collector is a Handler that hands messages to a channel.
type collector chan *Message

func newCollector() collector { return make(collector, 1000) }

func (c collector) handle(m *Message) { c <- m }

func (c collector) next(t *testing.T) *Message {
	t.Helper()
	select {
	case m := <-c:
		return m
	case <-time.After(testenv.Scale(20 * time.Second)):
		t.Fatal("no message arrived")
		return nil
	}
}

// none checks that nothing arrives while the broker handles a round trip on
// probe (a later message on the same subscription would have come behind).
func (c collector) empty(t *testing.T) {
	t.Helper()
	select {
	case m := <-c:
		t.Fatalf("unexpected message %q on %s", m.Payload, m.Topic)
	default:
	}
}
