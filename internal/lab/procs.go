package lab

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cleanEnv is the environment of the lab's processes: this one's without
// DROVER_* (an admin password, endpoint or token meant for the CLI must
// not reach the lab's servers and agents).
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DROVER_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// startProc starts this binary with args as a process of the lab, in a
// session of its own (so that it outlives up and a terminal's Ctrl-C does
// not reach it), inside the network namespace netns when set, with its
// output appended to DIR/logs/NAME.log. It is recorded before it returns.
func (s *State) startProc(name, netns string, env []string, args ...string) (*Proc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding the drover binary to start %s: %w", name, err)
	}
	logPath := s.procLog(name)
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	prog, argv := exe, args
	if netns != "" {
		// ip execs the program after entering the namespace: the pid and
		// the session stay those of the process started here.
		prog = "ip"
		argv = append([]string{"netns", "exec", netns, exe}, args...)
	}
	cmd := exec.Command(prog, argv...)
	cmd.Env = cleanEnv(env...)
	cmd.Dir = s.Dir
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	// Reap it if it ends while up still runs (after that, init does),
	// and keep how it ended for errors.
	go func() {
		_ = cmd.Wait()
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.exits == nil {
			s.exits = map[string]string{}
		}
		s.exits[name] = cmd.ProcessState.String()
	}()
	info, err := readProc(cmd.Process.Pid)
	if err != nil {
		// It ended at once; its log says why.
		return nil, fmt.Errorf("%s ended at once: %s", name, tail(logPath))
	}
	p := Proc{Name: name, Pid: cmd.Process.Pid, StartTime: info.startTime, Netns: netns, Log: logPath, Args: append([]string{prog}, argv...)}
	if err := s.update(func() { s.Procs = append(s.Procs, p) }); err != nil {
		return nil, err
	}
	return &p, nil
}

// exitOf says how a process up started has ended, when up saw it end.
func (s *State) exitOf(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.exits[name]; e != "" {
		return " (" + e + ")"
	}
	return ""
}

// procInfo is what /proc/PID/stat says of a process.
type procInfo struct {
	state     byte
	session   int
	startTime uint64
}

func readProc(pid int) (procInfo, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procInfo{}, err
	}
	// The command name may hold spaces and parentheses: fields start
	// after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procInfo{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// state ppid pgrp session ... starttime is field 22 of stat, the 20th
	// after the name.
	if len(f) < 20 {
		return procInfo{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	sid, err1 := strconv.Atoi(f[3])
	st, err2 := strconv.ParseUint(f[19], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return procInfo{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return procInfo{state: f[0][0], session: sid, startTime: st}, nil
}

// Alive says whether the process still runs (and is the one the lab
// started, not another that got its pid).
func (p Proc) Alive() bool {
	info, err := readProc(p.Pid)
	return err == nil && info.startTime == p.StartTime && info.state != 'Z'
}

// allPids lists the processes of this host.
func allPids() []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// sessionMembers lists the live processes of the session sid: a lab
// process and what it started (job scripts and commands run in process
// groups of their own, but stay in its session).
func sessionMembers(sid int, since uint64) []int {
	var out []int
	for _, pid := range allPids() {
		info, err := readProc(pid)
		if err == nil && info.session == sid && info.startTime >= since && info.state != 'Z' {
			out = append(out, pid)
		}
	}
	return out
}

// strays lists the drover processes of this host that belong to the lab
// in dir although it did not record them (an up that crashed between
// starting one and writing it down): a server whose data dir, or a lab
// helper whose directory, is under dir.
func strays(dir string) []int {
	var out []int
	self := os.Getpid()
	for _, pid := range allPids() {
		if pid == self {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || len(b) == 0 {
			continue
		}
		args := strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
		if isLabProcess(args, dir) {
			out = append(out, pid)
		}
	}
	return out
}

// isLabProcess says whether a command line is a drover server or lab
// helper process of the lab in dir.
func isLabProcess(args []string, dir string) bool {
	if len(args) < 2 || !strings.HasPrefix(filepath.Base(args[0]), "drover") {
		return false
	}
	role := args[1] == "server" || len(args) > 2 && args[1] == "lab" && (args[2] == "agents" || args[2] == "proxy")
	if !role {
		return false
	}
	for _, a := range args[2:] {
		if a == dir || strings.HasPrefix(a, dir+string(filepath.Separator)) {
			return true
		}
	}
	return false
}

// stopProcs ends the lab's processes: SIGTERM to each (servers and agents
// shut down cleanly and end their job scripts), then after grace SIGKILL
// to whatever is left of their sessions and to strays, until none is left.
// It returns how many processes it ended and an error naming survivors.
func stopProcs(procs []Proc, dir string, grace time.Duration) (int, error) {
	ended := map[int]bool{}
	for _, p := range procs {
		if p.Alive() && syscall.Kill(p.Pid, syscall.SIGTERM) == nil {
			ended[p.Pid] = true
		}
	}
	members := func() []int {
		var out []int
		for _, p := range procs {
			// A live process with the leader's pid and another start time
			// is someone else's session leader: the pid was reused.
			if info, err := readProc(p.Pid); err == nil && info.startTime != p.StartTime {
				continue
			}
			out = append(out, sessionMembers(p.Pid, p.StartTime)...)
		}
		return append(out, strays(dir)...)
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) && len(members()) > 0 {
		time.Sleep(50 * time.Millisecond)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		left := members()
		if len(left) == 0 {
			return len(ended), nil
		}
		if time.Now().After(deadline) {
			return len(ended), fmt.Errorf("processes %v of the lab did not end after SIGKILL", left)
		}
		for _, pid := range left {
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				ended[pid] = true
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// tail is the end of a log, for errors.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	b = bytes.TrimSpace(b)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	if len(b) == 0 {
		return "(its log " + path + " is empty)"
	}
	return string(b) + " (log: " + path + ")"
}
