package backend

import "sync"

// backgroundTasks counts the goroutines that outlive the request that
// started them, so that clean can wait for them. Unlike a sync.WaitGroup it
// allows a task to start while another goroutine waits, which can happen
// when a request races the mount's cleanup.
type backgroundTasks struct {
	mu      sync.Mutex
	running int

	// idle is closed when running drops to zero, and nil while nothing
	// runs.
	idle chan struct{}
}

// goRun runs task in a new goroutine and counts it until it returns.
func (t *backgroundTasks) goRun(task func()) {
	t.mu.Lock()
	if t.running == 0 {
		t.idle = make(chan struct{})
	}
	t.running++
	t.mu.Unlock()

	go func() {
		defer t.done()
		task()
	}()
}

func (t *backgroundTasks) done() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.running--
	if t.running == 0 {
		close(t.idle)
		t.idle = nil
	}
}

// wait blocks until no task runs. Tasks started while it waits may keep
// it waiting, and tasks started after it returned are not waited for.
func (t *backgroundTasks) wait() {
	t.mu.Lock()
	idle := t.idle
	t.mu.Unlock()
	if idle != nil {
		<-idle
	}
}
