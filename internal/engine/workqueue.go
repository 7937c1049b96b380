package engine

import (
	"sync"
)

// workQueue hands out keys to workers so that a key is never processed by
// two workers at once, and a key added while being processed is processed
// again afterwards (the level-triggered contract of controller work queues).
type workQueue struct {
	mu         sync.Mutex
	cond       *sync.Cond
	queue      []string
	dirty      map[string]bool
	processing map[string]bool
	closed     bool
}

func newWorkQueue() *workQueue {
	q := &workQueue{dirty: map[string]bool{}, processing: map[string]bool{}}
	q.cond = sync.NewCond(&q.mu)
	return q
}

func (q *workQueue) Add(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed || q.dirty[key] {
		return
	}
	q.dirty[key] = true
	if !q.processing[key] {
		q.queue = append(q.queue, key)
		q.cond.Signal()
	}
}

// Get blocks until a key is ready or the queue is closed.
func (q *workQueue) Get() (string, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.queue) == 0 && !q.closed {
		q.cond.Wait()
	}
	if q.closed {
		return "", false
	}
	key := q.queue[0]
	q.queue[0] = ""
	q.queue = q.queue[1:]
	delete(q.dirty, key)
	q.processing[key] = true
	return key, true
}

// Done marks a key processed; if it was added meanwhile it is queued again.
func (q *workQueue) Done(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.processing, key)
	if q.dirty[key] && !q.closed {
		q.queue = append(q.queue, key)
		q.cond.Signal()
	}
}

func (q *workQueue) Close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.cond.Broadcast()
}

func (q *workQueue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.queue)
}
