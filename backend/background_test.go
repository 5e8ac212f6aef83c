package backend

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// waitInBackground calls tasks.wait in a goroutine and returns a channel
// that is closed when the call returns.
func waitInBackground(tasks *backgroundTasks) <-chan struct{} {
	returned := make(chan struct{})
	go func() {
		tasks.wait()
		close(returned)
	}()
	return returned
}

func TestBackgroundWaitIdleReturns(t *testing.T) {
	var tasks backgroundTasks
	select {
	case <-waitInBackground(&tasks):
	case <-time.After(5 * time.Second):
		t.Fatal("wait with no task did not return")
	}
}

func TestBackgroundWaitBlocksUntilTasksEnd(t *testing.T) {
	var tasks backgroundTasks
	release := make(chan struct{})
	var finished atomic.Int32
	for range 3 {
		tasks.goRun(func() {
			<-release
			finished.Add(1)
		})
	}

	returned := waitInBackground(&tasks)
	select {
	case <-returned:
		t.Fatal("wait returned while tasks were running")
	case <-time.After(50 * time.Millisecond):
	}

	close(release)
	<-returned
	if got := finished.Load(); got != 3 {
		t.Errorf("tasks finished when wait returned = %d, want 3", got)
	}
}

func TestBackgroundStartsDuringWait(t *testing.T) {
	var tasks backgroundTasks
	var wg sync.WaitGroup
	var ran atomic.Int32
	for range 4 {
		wg.Go(func() {
			for range 500 {
				tasks.goRun(func() { ran.Add(1) })
			}
		})
		wg.Go(func() {
			for range 500 {
				tasks.wait()
			}
		})
	}
	wg.Wait()
	tasks.wait()
	if got := ran.Load(); got != 2000 {
		t.Errorf("tasks run = %d, want 2000", got)
	}
}
