package tests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// agent is a Nomad dev agent (server and client in one) on loopback, with
// the driver in its plugin directory.
type agent struct {
	t      *testing.T
	in     *instance
	bin    string // nomad
	dir    string
	addr   string // http://127.0.0.1:PORT
	cmd    *exec.Cmd
	exited chan struct{} // closed when the agent has exited
	log    string        // the agent's output
	plugin string        // the driver's binary in the plugin directory
}

// startAgent starts the agent from a temporary directory and waits until
// its node runs the nixcell driver. The agent binary is $NOMAD_BIN
// (scripts/build-nomad.sh builds it).
func startAgent(t *testing.T, in *instance) *agent {
	t.Helper()
	bin := os.Getenv("NOMAD_BIN")
	if bin == "" {
		skip(t, "NOMAD_BIN is not set (scripts/build-nomad.sh builds the Nomad agent)")
	}
	a := &agent{t: t, in: in, bin: bin, dir: t.TempDir()}
	pluginDir := filepath.Join(a.dir, "plugins")
	a.plugin = filepath.Join(pluginDir, "nixcell")
	if err := os.MkdirAll(pluginDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", pluginBin, a.plugin).CombinedOutput(); err != nil {
		t.Fatalf("copying the plugin: %v: %s", err, out)
	}
	http, rpc, serf := freePort(t), freePort(t), freePort(t)
	a.addr = fmt.Sprintf("http://127.0.0.1:%d", http)
	hostOnly, nat := in.subnets()
	config := fmt.Sprintf(`
data_dir   = %q
plugin_dir = %q
bind_addr  = "127.0.0.1"
ports {
  http = %d
  rpc  = %d
  serf = %d
}
client {
  network_interface = "lo"
  options = {
    # Nothing probes addresses off this machine (cloud metadata services).
    "fingerprint.denylist" = "env_aws,env_gce,env_azure,env_digitalocean"
    "driver.denylist"      = "docker,java,qemu,exec,raw_exec"
  }
}
plugin "nixcell" {
  config {
    state_dir       = %q
    nix_args        = ["-I", "nixpkgs=%s"]
    hostonly_subnet = %q
    nat_subnet      = %q
  }
}
`, filepath.Join(a.dir, "data"), pluginDir, http, rpc, serf, in.dir, fixtureNixpkgs(), hostOnly, nat)
	cfgFile := filepath.Join(a.dir, "agent.hcl")
	if err := os.WriteFile(cfgFile, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	a.log = filepath.Join(a.dir, "agent.log")
	logFile, err := os.Create(a.log)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	a.cmd = exec.Command(bin, "agent", "-dev", "-bind=127.0.0.1", "-config="+cfgFile)
	a.cmd.Dir = a.dir
	// AWS_CA_BUNDLE breaks Nomad's cloud fingerprinting here.
	for _, kv := range in.env {
		if !strings.HasPrefix(kv, "AWS_CA_BUNDLE=") {
			a.cmd.Env = append(a.cmd.Env, kv)
		}
	}
	a.cmd.Stdout, a.cmd.Stderr = logFile, logFile
	if err := a.cmd.Start(); err != nil {
		t.Fatalf("starting the Nomad agent: %v", err)
	}
	a.exited = make(chan struct{})
	go func() { _ = a.cmd.Wait(); close(a.exited) }()
	t.Cleanup(a.stop)
	a.eventually(90*time.Second, "the node is ready with a healthy nixcell driver", func() bool {
		var nodes []struct {
			ID      string
			Status  string
			Drivers map[string]struct {
				Detected, Healthy bool
			}
		}
		if a.get("/v1/nodes?resources=true", &nodes) != nil || len(nodes) != 1 {
			return false
		}
		d := nodes[0].Drivers["nixcell"]
		return nodes[0].Status == "ready" && d.Detected && d.Healthy
	})
	return a
}

// stop stops the agent by its PID: SIGINT, then SIGKILL after 30 s.
func (a *agent) stop() {
	select {
	case <-a.exited:
	default:
		_ = a.cmd.Process.Signal(syscall.SIGINT)
	}
	select {
	case <-a.exited:
	case <-time.After(30 * time.Second):
		_ = a.cmd.Process.Kill()
		<-a.exited
	}
	if a.t.Failed() {
		data, _ := os.ReadFile(a.log)
		if len(data) > 20000 {
			data = data[len(data)-20000:]
		}
		a.t.Logf("the agent's log (end):\n%s", data)
	}
}

// nomad runs the nomad command line against the agent.
func (a *agent) nomad(args ...string) (string, error) {
	cmd := exec.Command(a.bin, args...)
	cmd.Dir = a.dir
	cmd.Env = append(os.Environ(), "NOMAD_ADDR="+a.addr)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// get reads the agent's HTTP API.
func (a *agent) get(path string, v any) error {
	c := http.Client{Timeout: 5 * time.Second}
	r, err := c.Get(a.addr + path)
	if err != nil {
		return err
	}
	defer r.Body.Close()
	if r.StatusCode != 200 {
		b, _ := io.ReadAll(r.Body)
		return fmt.Errorf("GET %s: %s: %s", path, r.Status, b)
	}
	return json.NewDecoder(r.Body).Decode(v)
}

func (a *agent) eventually(timeout time.Duration, what string, cond func() bool) {
	a.t.Helper()
	for deadline := time.Now().Add(timeout); ; time.Sleep(250 * time.Millisecond) {
		if cond() {
			return
		}
		select {
		case <-a.exited:
			a.t.Fatalf("%s: the agent exited", what)
		default:
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("%s: not within %v", what, timeout)
		}
	}
}

// run submits a job file and returns the job's only allocation once it
// has the client status want.
func (a *agent) run(job, jobfile, want string) alloc {
	a.t.Helper()
	path := filepath.Join(a.dir, job+".nomad.hcl")
	if err := os.WriteFile(path, []byte(jobfile), 0o644); err != nil {
		a.t.Fatal(err)
	}
	if out, err := a.nomad("job", "run", "-detach", path); err != nil {
		a.t.Fatalf("nomad job run %s: %v\n%s", job, err, out)
	}
	var al alloc
	a.eventually(2*time.Minute, "job "+job+": an allocation "+want, func() bool {
		var allocs []alloc
		if a.get("/v1/job/"+job+"/allocations", &allocs) != nil || len(allocs) == 0 {
			return false
		}
		al = allocs[0]
		if al.ClientStatus == "failed" {
			out, _ := a.nomad("alloc", "status", al.ID)
			a.t.Fatalf("job %s: the allocation failed:\n%s", job, out)
		}
		return al.ClientStatus == want
	})
	return al
}

type alloc struct {
	ID           string
	ClientStatus string
}

// logs is the task's stdout as nomad alloc logs shows it.
func (a *agent) logs(al alloc, task string) string {
	out, err := a.nomad("alloc", "logs", al.ID, task)
	if err != nil {
		a.t.Fatalf("nomad alloc logs: %v\n%s", err, out)
	}
	return out
}

// pluginPid is the PID of the driver's plugin process that the agent runs.
func (a *agent) pluginPid() int {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		if exe != a.plugin || i < 0 || strings.Count(string(cmdline), "\x00") != 1 {
			continue
		}
		if f := strings.Fields(s[i+1:]); len(f) > 1 && f[1] == strconv.Itoa(a.cmd.Process.Pid) {
			return pid
		}
	}
	return 0
}

// initPid is the PID of the container's init (0 when it is not running).
func (in *instance) initPid(container string) int {
	out, err := in.nixcell("state", "--json", container)
	var st struct{ Pid int }
	if json.Unmarshal([]byte(out), &st) != nil && err != nil {
		in.t.Fatalf("nixcell state %s: %v: %s", container, err, out)
	}
	return st.Pid
}

const batchJob = `
job "nixcell-batch" {
  datacenters = ["dc1"]
  type        = "batch"
  group "g" {
    restart {
      attempts = 0
      mode     = "fail"
    }
    task "hello" {
      driver = "nixcell"
      config {
        config = "{ system.fixture.label = \"batch\"; system.fixture.exitAfter = 1; }"
      }
      resources {
        cpu    = 100
        memory = 64
      }
    }
  }
}
`

const serviceJob = `
job "nixcell-web" {
  datacenters = ["dc1"]
  type        = "service"
  group "g" {
    network {
      port "http" {
        to = 80
      }
    }
    task "web" {
      driver       = "nixcell"
      kill_timeout = "20s"
      config {
        config = "{ system.fixture.label = \"web\"; services.httpd.enable = true; services.httpd.text = \"hello from nomad\\n\"; }"
      }
      resources {
        cpu    = 100
        memory = 64
      }
    }
  }
}
`

// TestAgent runs a batch job and a service job on a real Nomad agent:
// alloc status, logs, alloc exec, the service's port, a restart of the
// plugin with the task running, and a stop.
func TestAgent(t *testing.T) {
	in := newInstance(t)
	a := startAgent(t, in)

	t.Run("batch", func(t *testing.T) {
		a.t = t
		al := a.run("nixcell-batch", batchJob, "complete")
		out, err := a.nomad("alloc", "status", al.ID)
		if err != nil || !strings.Contains(out, "Exit Code: 0") {
			t.Errorf("nomad alloc status: %v\n%s", err, out)
		}
		if logs := a.logs(al, "hello"); !strings.Contains(logs, "fixture: start label=batch") || !strings.Contains(logs, "fixture: exit code=0") {
			t.Errorf("nomad alloc logs:\n%s", logs)
		}
		if out, err := a.nomad("job", "stop", "-detach", "-purge", "nixcell-batch"); err != nil {
			t.Errorf("nomad job stop: %v\n%s", err, out)
		}
		a.eventually(30*time.Second, "the batch task's container is removed", func() bool { return len(in.containers()) == 0 })
	})

	t.Run("service", func(t *testing.T) {
		a.t = t
		al := a.run("nixcell-web", serviceJob, "running")
		container := "nomad-" + al.ID[:8] + "-web"
		out, err := a.nomad("alloc", "status", al.ID)
		if err != nil || !strings.Contains(out, "running") {
			t.Errorf("nomad alloc status: %v\n%s", err, out)
		}
		a.eventually(15*time.Second, "the init's start in nomad alloc logs", func() bool {
			return strings.Contains(a.logs(al, "web"), "fixture: start label=web")
		})
		out, err = a.nomad("alloc", "exec", "-i=false", "-t=false", "-task", "web", al.ID, "cat", "/etc/nixcell-fixture/label")
		if err != nil || strings.TrimSpace(out) != "web" {
			t.Errorf("nomad alloc exec: %v: %q", err, out)
		}

		// The service answers on the port Nomad allocated.
		var full struct {
			AllocatedResources struct {
				Shared struct {
					Ports []struct {
						Label  string
						Value  int
						HostIP string
					}
				}
			}
		}
		if err := a.get("/v1/allocation/"+al.ID, &full); err != nil || len(full.AllocatedResources.Shared.Ports) != 1 {
			t.Fatalf("the allocation's ports: %+v, %v", full.AllocatedResources.Shared, err)
		}
		p := full.AllocatedResources.Shared.Ports[0]
		url := fmt.Sprintf("http://%s:%d/", p.HostIP, p.Value)
		var last string
		defer func() {
			if t.Failed() {
				state, _ := in.nixcell("state", "--json", container)
				network, _ := in.nixcell("network", "status")
				t.Logf("GET %s, the last answer: %s\nnixcell state:\n%s\nnixcell network:\n%s", url, last, state, network)
			}
		}()
		a.eventually(20*time.Second, "GET "+url, func() bool {
			c := http.Client{Timeout: time.Second}
			r, err := c.Get(url)
			if err != nil {
				last = err.Error()
				return false
			}
			defer r.Body.Close()
			b, _ := io.ReadAll(r.Body)
			last = fmt.Sprintf("%s: %q", r.Status, b)
			return string(b) == "hello from nomad\n"
		})

		// The plugin dies; Nomad starts it again and it recovers the task:
		// the same init keeps running.
		initPid := in.initPid(container)
		plugin := a.pluginPid()
		if initPid == 0 || plugin == 0 {
			t.Fatalf("init pid %d, plugin pid %d", initPid, plugin)
		}
		if err := syscall.Kill(plugin, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		a.eventually(60*time.Second, "a new plugin process", func() bool {
			p := a.pluginPid()
			return p != 0 && p != plugin
		})
		a.eventually(30*time.Second, "nomad alloc exec through the new plugin", func() bool {
			out, err := a.nomad("alloc", "exec", "-i=false", "-t=false", "-task", "web", al.ID, "cat", "/etc/nixcell-fixture/label")
			return err == nil && strings.TrimSpace(out) == "web"
		})
		if now := in.initPid(container); now != initPid {
			t.Errorf("the container's init changed across the plugin's restart: %d, then %d", initPid, now)
		}
		var allocNow alloc
		if err := a.get("/v1/allocation/"+al.ID, &allocNow); err != nil || allocNow.ClientStatus != "running" {
			t.Errorf("the allocation after the plugin's restart: %+v, %v", allocNow, err)
		}
		if n := strings.Count(a.logs(al, "web"), "fixture: start"); n != 1 {
			t.Errorf("the init started %d times", n)
		}

		// A stop: the init's clean shutdown, then the container is gone.
		if out, err := a.nomad("job", "stop", "-detach", "nixcell-web"); err != nil {
			t.Fatalf("nomad job stop: %v\n%s", err, out)
		}
		a.eventually(60*time.Second, "the allocation is complete", func() bool {
			var cur alloc
			return a.get("/v1/allocation/"+al.ID, &cur) == nil && cur.ClientStatus == "complete"
		})
		if logs := a.logs(al, "web"); !strings.Contains(logs, "fixture: stop signal=RTMIN+3") {
			t.Errorf("no clean stop in the logs:\n%s", logs)
		}
		a.eventually(30*time.Second, "the service's container is removed", func() bool { return len(in.containers()) == 0 })
		_, _ = a.nomad("job", "stop", "-purge", "nixcell-web")
	})
}
