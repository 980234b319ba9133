package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nixcell/nixcell/internal/atomicfile"
	"github.com/nixcell/nixcell/internal/idmap"
	"github.com/nixcell/nixcell/internal/testutil"
)

// commandBound is how long one command of TestConcurrentCommands may take:
// longer is a hang, and fails the test with the command's name.
const commandBound = 2 * time.Minute

// bounded runs nixcell -q args in the instance, killed after commandBound;
// hung says that it was. It is safe to call from any goroutine.
func (in *instance) bounded(args ...string) (r result, hung bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), commandBound)
	defer cancel()
	args = append([]string{"-q"}, args...)
	c := exec.CommandContext(ctx, in.bin, args...)
	c.Env = in.cmd().Env
	c.WaitDelay = 5 * time.Second
	var out, errb strings.Builder
	c.Stdout, c.Stderr = &out, &errb
	err = c.Run()
	r = result{stdout: out.String(), stderr: errb.String()}
	if ctx.Err() != nil {
		return r, true, nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code, err = ee.ExitCode(), nil
	}
	return r, false, err
}

// listed is an entry of list --json, as far as this test reads it.
type listed struct {
	Name       string       `json:"name"`
	State      string       `json:"state"`
	Generation int          `json:"generation"`
	System     string       `json:"system"`
	IDs        *idmap.Range `json:"ids"`
	IPv4       string       `json:"ipv4"`
	IPv6       string       `json:"ipv6"`
	Limits     struct {
		MemoryBytes uint64 `json:"memoryBytes"`
		Pids        int64  `json:"pids"`
	} `json:"limits"`
}

// whole tells whether the entry shows all that a finished create makes:
// a system (generation), an ID range and addresses.
func (l listed) whole() bool {
	return l.Generation >= 1 && l.System != "" && l.IDs != nil && l.IPv4 != "" && l.IPv6 != ""
}

// clearFailure checks that a failed command of nixcell ended as the CLI's
// table says a refused operation ends (exit 1: every class but a bad
// command line) with one line on stderr that names the command and the
// container and says want; never a panic or a bare system call error.
func clearFailure(r result, verb, name, want string) error {
	line := strings.TrimSuffix(r.stderr, "\n")
	prefix := "nixcell: " + verb + " " + name + ": "
	switch {
	case r.code != 1:
		return fmt.Errorf("exit %d, want 1 (a refused operation): %s", r.code, r)
	case strings.Contains(line, "\n"):
		return fmt.Errorf("the error is not one line: %s", r)
	case !strings.HasPrefix(line, prefix):
		return fmt.Errorf("the error does not start with %q: %s", prefix, r)
	case strings.Contains(line, "panic") || strings.Contains(line, "goroutine "):
		return fmt.Errorf("a panic: %s", r)
	case strings.TrimSpace(strings.TrimPrefix(line, prefix)) == "resource temporarily unavailable":
		return fmt.Errorf("a bare system call error: %s", r)
	case !strings.Contains(line, want):
		return fmt.Errorf("the error does not say %q: %s", want, r)
	}
	return nil
}

// succeeded checks that a command exited 0 and, being quiet, printed
// nothing on stderr.
func succeeded(r result) error {
	if r.code != 0 || r.stderr != "" {
		return fmt.Errorf("want exit 0 and nothing on stderr: %s", r)
	}
	return nil
}

// TestConcurrentCommands: two instances at once run 62 commands launched
// together (issue 13, concurrency): create, start, stop, update, destroy
// and list, on distinct containers and several on the same one, among
// containers created before and during the run, and three names created
// in both instances. Each conflict has the outcome its order allows (see
// the pairs below); every refusal is a one-line error of exit status 1
// naming the container; no command hangs. list --json, sampled all along
// and while everything is destroyed, never fails, never shows a container
// as stopped or running before its create has made it whole, and never
// two containers with one ID range or address. After the run every
// container is as the outcomes say and as list and state say, ID ranges,
// addresses and port claims are distinct and held only by containers
// that exist, and destroying all leaves nothing (doctor and the harness's
// checks).
func TestConcurrentCommands(t *testing.T) {
	a, b := newInstance(t), newInstance(t)
	system := prebuilt(t, `{ }`)
	instances := []*instance{a, b}
	// One host port, which two creates in each instance claim at once:
	// host ports are claimed host-wide, so one of the four has it.
	k := freeSubnet(t, func(int) []string { return nil })
	port := map[*instance]int{a: 24000 + k, b: 24000 + k}
	tag := map[*instance]string{a: "a", b: "b"}
	pre, fresh := map[*instance][10]string{}, map[*instance][6]string{}
	for _, in := range instances {
		var p [10]string
		for i := range p {
			p[i] = testutil.Name(fmt.Sprintf("cc%s%d", tag[in], i))
		}
		var n [6]string
		for i := range n {
			n[i] = testutil.Name(fmt.Sprintf("cn%s%d", tag[in], i))
		}
		pre[in], fresh[in] = p, n
	}
	// Nix profiles are named host-wide: a name created in both instances
	// at once is a conflict of its own; three of them, for the race.
	var same [3]string
	for i := range same {
		same[i] = testutil.Name(fmt.Sprintf("ccsame%d", i))
	}

	// Before the run: c0..c9 in each instance, c0, c3, c5 and c8
	// running.
	running := map[int]bool{0: true, 3: true, 5: true, 8: true}
	var setup sync.WaitGroup
	var setupMu sync.Mutex
	var setupErrs []string
	for _, in := range instances {
		for i, name := range pre[in] {
			setup.Add(1)
			go func() {
				defer setup.Done()
				steps := [][]string{{"create", name, "--system", system}}
				if running[i] {
					steps = append(steps, []string{"start", name})
				}
				for _, s := range steps {
					if r, hung, err := in.bounded(s...); err != nil || hung || r.code != 0 {
						setupMu.Lock()
						setupErrs = append(setupErrs, fmt.Sprintf("%s: %v (hung %v): %s", strings.Join(s, " "), err, hung, r))
						setupMu.Unlock()
						return
					}
				}
			}()
		}
	}
	setup.Wait()
	if len(setupErrs) > 0 {
		t.Fatalf("setting up: %s", strings.Join(setupErrs, "\n"))
	}

	// The run. Each op is one command (then, when it succeeds, the next
	// of its chain).
	type op struct {
		in    *instance
		args  []string
		then  []string
		r     result
		hung  bool
		err   error
		took  time.Duration
		thenR *result
	}
	var ops []*op
	add := func(in *instance, args ...string) *op {
		o := &op{in: in, args: args}
		ops = append(ops, o)
		return o
	}
	type pair struct{ x, y *op }
	type conflicts struct {
		stopStop, startStart, startDestroy, updateStop, updateStart, destroyStop, destroyDestroy, startStop pair
		createCreate, createDestroy, portPort                                                               pair
		update8, start9, create2, create5                                                                   *op
	}
	cs := map[*instance]*conflicts{}
	ports := func(in *instance) string {
		return fmt.Sprintf(`{ network.forwardPorts = [ { protocol = "tcp"; hostPort = %d; containerPort = 80; } ]; }`, port[in])
	}
	for _, in := range instances {
		c, p, n := &conflicts{}, pre[in], fresh[in]
		c.stopStop = pair{add(in, "stop", p[0], "--timeout", "20s"), add(in, "stop", p[0], "--timeout", "20s")}
		c.startStart = pair{add(in, "start", p[1]), add(in, "start", p[1])}
		c.startDestroy = pair{add(in, "start", p[2]), add(in, "destroy", p[2], "--timeout", "20s")}
		c.updateStop = pair{add(in, "update", p[3], "--memory", "300M"), add(in, "stop", p[3], "--timeout", "20s")}
		c.updateStart = pair{add(in, "update", p[4], "--system", system, "-c", `{ limits.pids = 500; }`), add(in, "start", p[4])}
		c.destroyStop = pair{add(in, "destroy", p[5], "--timeout", "20s"), add(in, "stop", p[5], "--timeout", "20s")}
		c.destroyDestroy = pair{add(in, "destroy", p[6]), add(in, "destroy", p[6])}
		c.startStop = pair{add(in, "start", p[7]), add(in, "stop", p[7], "--timeout", "20s")}
		c.update8 = add(in, "update", p[8], "--memory", "200M")
		c.start9 = add(in, "start", p[9])
		c.createCreate = pair{add(in, "create", n[0], "--system", system), add(in, "create", n[0], "--system", system)}
		c.createDestroy = pair{add(in, "create", n[1], "--system", system), add(in, "destroy", n[1])}
		c.create2 = add(in, "create", n[2], "--system", system)
		c.create2.then = []string{"start", n[2]}
		c.portPort = pair{add(in, "create", n[3], "--system", system, "-c", ports(in)), add(in, "create", n[4], "--system", system, "-c", ports(in))}
		c.create5 = add(in, "create", n[5], "--system", system)
		add(in, "list", "--json")
		add(in, "list", "--json")
		cs[in] = c
	}
	var samePairs []pair
	for _, name := range same {
		samePairs = append(samePairs, pair{add(a, "create", name, "--system", system), add(b, "create", name, "--system", system)})
	}

	// list --json, sampled in each instance all along the run.
	var mu sync.Mutex
	var sampleErrs []string
	seenWhole := map[string]bool{} // "INSTANCE NAME" listed as stopped or running
	seenStates := map[string]int{} // how many times list showed each state
	samples := 0
	sampleErr := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(sampleErrs) < 20 {
			sampleErrs = append(sampleErrs, fmt.Sprintf(format, args...))
		}
	}
	isPre := map[string]bool{}
	for _, in := range instances {
		for _, n := range pre[in] {
			isPre[n] = true
		}
	}
	// sampling runs list --json in both instances until the returned stop
	// is called, checking every sample; when says during what.
	sampling := func(when string) (stop func()) {
		done := make(chan struct{})
		var samplers sync.WaitGroup
		for _, in := range instances {
			samplers.Add(1)
			go func() {
				defer samplers.Done()
				for {
					select {
					case <-done:
						return
					default:
					}
					r, hung, err := in.bounded("list", "--json")
					if err != nil || hung {
						sampleErr("list --json in %s: %v (hung %v)", tag[in], err, hung)
						return
					}
					if err := succeeded(r); err != nil {
						sampleErr("list --json in %s %s: %v", tag[in], when, err)
						continue
					}
					var ls []listed
					if err := json.Unmarshal([]byte(r.stdout), &ls); err != nil {
						sampleErr("list --json in %s: %v: %s", tag[in], err, r.stdout)
						continue
					}
					mu.Lock()
					samples++
					mu.Unlock()
					ids, addrs := map[uint32]string{}, map[string]string{}
					for _, l := range ls {
						mu.Lock()
						seenStates[l.State]++
						mu.Unlock()
						switch l.State {
						case "stopped", "running":
							// Whole: a create records the container as made
							// only once its system, ID range and addresses
							// are.
							if !l.whole() {
								sampleErr("list in %s shows %s %s while it is not whole: %+v", tag[in], l.Name, l.State, l)
							}
							mu.Lock()
							seenWhole[tag[in]+" "+l.Name] = true
							mu.Unlock()
						case "creating":
							if isPre[l.Name] {
								sampleErr("list in %s shows %s, created before the run, as creating", tag[in], l.Name)
							}
						case "destroying":
						default:
							sampleErr("list in %s shows %s in state %q", tag[in], l.Name, l.State)
						}
						if l.IDs != nil {
							if o, dup := ids[l.IDs.Start]; dup {
								sampleErr("list in %s shows %s and %s with ID range %v", tag[in], o, l.Name, l.IDs)
							}
							ids[l.IDs.Start] = l.Name
						}
						for _, ip := range []string{l.IPv4, l.IPv6} {
							if o, dup := addrs[ip]; dup && ip != "" {
								sampleErr("list in %s shows %s and %s with address %s", tag[in], o, l.Name, ip)
							}
							addrs[ip] = l.Name
						}
					}
				}
			}()
		}
		return func() {
			close(done)
			samplers.Wait()
		}
	}

	stopSampling := sampling("during the run")
	t0 := time.Now()
	var wg sync.WaitGroup
	start := make(chan struct{})
	for _, o := range ops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			begin := time.Now()
			o.r, o.hung, o.err = o.in.bounded(o.args...)
			if o.then != nil && !o.hung && o.err == nil && o.r.code == 0 {
				r, hung, err := o.in.bounded(o.then...)
				o.thenR, o.hung, o.err = &r, hung, err
			}
			o.took = time.Since(begin)
		}()
	}
	close(start)
	wg.Wait()
	stopSampling()
	chained := 0
	for _, o := range ops {
		if o.thenR != nil {
			chained++
		}
	}
	t.Logf("%d commands launched at once (and %d after them) in %v (longest %v); %d list samples", len(ops), chained, time.Since(t0).Round(time.Millisecond),
		slices.MaxFunc(ops, func(x, y *op) int { return int(x.took - y.took) }).took.Round(time.Millisecond), samples)
	t.Logf("list showed, in all its samples: %v", seenStates)
	for _, e := range sampleErrs {
		t.Error(e)
	}
	if samples < 4 {
		t.Errorf("list --json was sampled only %d times during the run", samples)
	}

	label := func(o *op) string { return tag[o.in] + ": nixcell " + strings.Join(o.args, " ") }
	for _, o := range ops {
		if o.hung {
			t.Errorf("%s hung: still running after %v", label(o), commandBound)
		}
		if o.err != nil {
			t.Errorf("%s: %v", label(o), o.err)
		}
		if o.thenR != nil {
			if err := succeeded(*o.thenR); err != nil {
				t.Errorf("%s, then %s: %v", label(o), strings.Join(o.then, " "), err)
			}
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	for _, o := range ops {
		if o.r.code != 0 {
			t.Logf("refused: %s: %s", label(o), strings.TrimSpace(o.r.stderr))
		}
	}
	// won: the op succeeded.
	won := func(o *op) bool { return o.r.code == 0 }
	mustSucceed := func(o *op) {
		if err := succeeded(o.r); err != nil {
			t.Errorf("%s: %v", label(o), err)
		}
	}
	mustRefuse := func(o *op, want string) {
		if err := clearFailure(o.r, o.args[0], o.args[1], want); err != nil {
			t.Errorf("%s: %v", label(o), err)
		}
	}
	// oneWins: exactly one of the pair succeeds, the other is refused
	// saying want.
	oneWins := func(p pair, want string) *op {
		switch {
		case won(p.x) && !won(p.y):
			mustSucceed(p.x)
			mustRefuse(p.y, want)
			return p.x
		case won(p.y) && !won(p.x):
			mustSucceed(p.y)
			mustRefuse(p.x, want)
			return p.y
		}
		t.Errorf("%s and %s: want exactly one to succeed, the other refused (%s); got %s and %s", label(p.x), label(p.y), want, p.x.r, p.y.r)
		return nil
	}
	// firstOrNot: x always succeeds; y succeeds when it came first (or
	// second, as the pair says) and else is refused saying want. It
	// returns whether y succeeded.
	firstOrNot := func(p pair, want string) bool {
		mustSucceed(p.x)
		if won(p.y) {
			mustSucceed(p.y)
			return true
		}
		mustRefuse(p.y, want)
		return false
	}

	// want is every container's expected state after the run, by
	// instance; "" for none.
	want := map[*instance]map[string]string{}
	wantMemory := map[*instance]map[string]uint64{}
	wantPids := map[*instance]map[string]int64{}
	// Four creates forwarding one host port, two in each instance: one
	// claims it.
	var portWinner *op
	for _, in := range instances {
		for _, o := range []*op{cs[in].portPort.x, cs[in].portPort.y} {
			if !won(o) {
				mustRefuse(o, fmt.Sprintf("port %d is forwarded to container", port[in]))
			} else if portWinner == nil {
				portWinner = o
			} else {
				t.Errorf("%s and %s both forward host port %d", label(portWinner), label(o), port[in])
			}
		}
	}
	if portWinner == nil {
		t.Errorf("none of the creates forwarding host port %d succeeded", port[a])
	}
	for _, in := range instances {
		c, p, n := cs[in], pre[in], fresh[in]
		w := map[string]string{}
		// Two stops of a running one: the second finds it stopped.
		oneWins(c.stopStop, "not running")
		w[p[0]] = "stopped"
		// Two starts of a stopped one: the second finds it running.
		oneWins(c.startStart, "already running")
		w[p[1]] = "running"
		// start and destroy: destroy always succeeds (it stops a running
		// one); start succeeds only before it.
		firstOrNot(pair{c.startDestroy.y, c.startDestroy.x}, "no such container")
		// update of the limits and stop of a running one: both succeed in
		// either order; it ends stopped with the new limit.
		mustSucceed(c.updateStop.x)
		mustSucceed(c.updateStop.y)
		w[p[3]] = "stopped"
		// update of the settings and start of a stopped one: the same.
		mustSucceed(c.updateStart.x)
		mustSucceed(c.updateStart.y)
		w[p[4]] = "running"
		// destroy and stop of a running one: destroy always succeeds,
		// stop only before it.
		firstOrNot(c.destroyStop, "no such container")
		// Two destroys: the second finds nothing.
		oneWins(c.destroyDestroy, "no such container")
		// start and stop of a stopped one: start always succeeds; stop
		// succeeds if it came after the start, and then it ends stopped;
		// before, it is refused and the container ends running.
		if firstOrNot(c.startStop, "not running") {
			w[p[7]] = "stopped"
		} else {
			w[p[7]] = "running"
		}
		mustSucceed(c.update8)
		w[p[8]] = "running"
		mustSucceed(c.start9)
		w[p[9]] = "running"
		// Two creates of one name: the second finds it made.
		oneWins(c.createCreate, "already exists")
		w[n[0]] = "stopped"
		// create and destroy of a new name: create always succeeds (the
		// destroy waits for its lock); destroy succeeds only after it.
		if firstOrNot(c.createDestroy, "no such container") {
			w[n[1]] = ""
		} else {
			w[n[1]] = "stopped"
		}
		mustSucceed(c.create2)
		w[n[2]] = "running"
		for _, o := range []*op{c.portPort.x, c.portPort.y} {
			if o == portWinner {
				w[o.args[1]] = "stopped"
			} else {
				w[o.args[1]] = ""
			}
		}
		mustSucceed(c.create5)
		w[n[5]] = "stopped"
		for _, o := range ops {
			if o.in == in && o.args[0] == "list" {
				mustSucceed(o)
			}
		}
		want[in] = w
		wantMemory[in] = map[string]uint64{p[3]: 300 << 20, p[8]: 200 << 20}
		wantPids[in] = map[string]int64{p[4]: 500}
	}
	// One name in both instances: one of them has it.
	for _, p := range samePairs {
		winner := oneWins(p, "already exists")
		for _, o := range []*op{p.x, p.y} {
			if o == winner {
				want[o.in][o.args[1]] = "stopped"
			} else {
				want[o.in][o.args[1]] = ""
			}
		}
	}
	// Whatever list showed as made was made by a create that succeeded.
	for key := range seenWhole {
		in, name, _ := strings.Cut(key, " ")
		if isPre[name] {
			continue
		}
		made := false
		for _, o := range ops {
			made = made || (tag[o.in] == in && o.args[0] == "create" && o.args[1] == name && won(o))
		}
		if !made {
			t.Errorf("list in %s showed %s as stopped or running, but no create of it succeeded", in, name)
		}
	}

	// Every container is as the outcomes say, and as list and state say.
	type holder struct {
		in   *instance
		name string
	}
	byIDs, byAddr := map[idmap.Range]holder{}, map[string]holder{}
	var all []holder
	for _, in := range instances {
		r, _, err := in.bounded("list", "--json")
		if err != nil || succeeded(r) != nil {
			t.Fatalf("list --json in %s after the run: %v %s", tag[in], err, r)
		}
		var ls []listed
		if err := json.Unmarshal([]byte(r.stdout), &ls); err != nil {
			t.Fatalf("list --json in %s: %v", tag[in], err)
		}
		got := map[string]listed{}
		for _, l := range ls {
			got[l.Name] = l
		}
		for name, st := range want[in] {
			l, exists := got[name]
			switch {
			case st == "" && exists:
				t.Errorf("%s: %s exists (%s) after the run, want it gone", tag[in], name, l.State)
			case st != "" && !exists:
				t.Errorf("%s: %s does not exist after the run, want it %s", tag[in], name, st)
			case st != "" && l.State != st:
				t.Errorf("%s: %s is %s after the run, want %s", tag[in], name, l.State, st)
			}
		}
		for _, l := range ls {
			if _, planned := want[in][l.Name]; !planned {
				t.Errorf("%s: list shows %s, which the test did not make", tag[in], l.Name)
			}
			if !l.whole() {
				t.Errorf("%s: %s is not whole after the run: %+v", tag[in], l.Name, l)
			}
			if m, ok := wantMemory[in][l.Name]; ok && l.Limits.MemoryBytes != m {
				t.Errorf("%s: %s has memory limit %d, want %d", tag[in], l.Name, l.Limits.MemoryBytes, m)
			}
			if p, ok := wantPids[in][l.Name]; ok && l.Limits.Pids != p {
				t.Errorf("%s: %s has pids limit %d, want %d", tag[in], l.Name, l.Limits.Pids, p)
			}
			sr, _, err := in.bounded("state", l.Name)
			code := map[string]int{"running": 0, "stopped": 3}[l.State]
			if err != nil || sr.code != code || strings.TrimSpace(sr.stdout) != l.State {
				t.Errorf("%s: state %s says %s, list says %s", tag[in], l.Name, sr, l.State)
			}
			h := holder{in, l.Name}
			all = append(all, h)
			if l.IDs == nil {
				t.Errorf("%s: %s holds no ID range", tag[in], l.Name)
			} else {
				for r, o := range byIDs {
					if r.End() > uint64(l.IDs.Start) && l.IDs.End() > uint64(r.Start) {
						t.Errorf("%s of %s holds %v, overlapping %v of %s of %s", l.Name, tag[in], *l.IDs, r, o.name, tag[o.in])
					}
				}
				byIDs[*l.IDs] = h
			}
			for _, ip := range []string{l.IPv4, l.IPv6} {
				if o, dup := byAddr[ip]; dup || ip == "" {
					t.Errorf("%s of %s has address %q, as %s of %s", l.Name, tag[in], ip, o.name, tag[o.in])
				}
				byAddr[ip] = h
			}
		}
		// What the instance holds, it holds for its containers only: ID
		// ranges, addresses and port claims.
		held, err := in.ranges().All()
		if err != nil {
			t.Fatal(err)
		}
		for name, r := range held {
			if l, ok := got[name]; !ok || l.IDs == nil || *l.IDs != r {
				t.Errorf("%s: the registry holds %v for %s, which list shows as %+v", tag[in], r, name, l)
			}
		}
		var net struct {
			Addresses map[string]json.RawMessage `json:"addresses"`
			Ports     map[string][]struct {
				Protocol string `json:"protocol"`
				HostPort int    `json:"hostPort"`
			} `json:"ports"`
		}
		if err := atomicfile.ReadJSON(in.store.NetworkPath(), &net); err != nil {
			t.Fatal(err)
		}
		for name := range net.Addresses {
			if _, ok := got[name]; !ok {
				t.Errorf("%s: addresses are allocated to %s, which does not exist", tag[in], name)
			}
		}
		claimed := map[string]string{}
		for name, fs := range net.Ports {
			if _, ok := got[name]; !ok {
				t.Errorf("%s: %s claims ports %v but does not exist", tag[in], name, fs)
			}
			for _, f := range fs {
				key := fmt.Sprintf("%s %d", f.Protocol, f.HostPort)
				if o, dup := claimed[key]; dup {
					t.Errorf("%s: %s and %s both forward %s", tag[in], o, name, key)
				}
				claimed[key] = name
			}
		}
		if wantClaims := map[bool]int{true: 1, false: 0}[portWinner != nil && portWinner.in == in]; len(claimed) != wantClaims {
			t.Errorf("%s: port claims %v, want %d (the winning create's)", tag[in], net.Ports, wantClaims)
		}
	}
	// The ranges of the host's registry are distinct, ours among them.
	checkDistinct(t)

	// Destroy everything at once, list sampled meanwhile; nothing is
	// left behind.
	mu.Lock()
	sampleErrs, samples = nil, 0
	mu.Unlock()
	stopSampling = sampling("while destroying")
	var destroy sync.WaitGroup
	for _, h := range all {
		destroy.Add(1)
		go func() {
			defer destroy.Done()
			r, hung, err := h.in.bounded("destroy", "--timeout", "20s", h.name)
			if err != nil || hung || succeeded(r) != nil {
				t.Errorf("destroy %s of %s: %v (hung %v) %s", h.name, tag[h.in], err, hung, r)
			}
		}()
	}
	destroy.Wait()
	stopSampling()
	t.Logf("%d list samples while destroying", samples)
	for _, e := range sampleErrs {
		t.Error(e)
	}
	for _, in := range instances {
		in.noLeftovers("after destroying every container of " + tag[in])
	}
}
