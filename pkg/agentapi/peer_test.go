package agentapi

import (
	"bufio"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"outcall.dev/outcall/pkg/api"
)

func unixRights(fd int) []byte { return syscall.UnixRights(fd) }

func TestParseCgroup(t *testing.T) {
	id := strings.Repeat("0123456789abcdef", 4)
	upper := strings.ToUpper(id)
	other := strings.Repeat("f", 64)
	tests := []struct {
		name, file string
		want       string // "" means no id
	}{
		{"cgroup v1", "12:pids:/docker/" + id + "\n11:memory:/docker/" + id + "\n", id},
		{"systemd v2", "0::/system.slice/docker-" + id + ".scope\n", id},
		{"private cgroupns", "0::/../" + id + "\n", id},
		{"uppercase is lowercased", "0::/system.slice/docker-" + upper + ".scope\n", id},
		{"v1 nested below the container", "4:cpu:/docker/" + id + "/sub\n", id},
		{"v1 and v2 lines agree", "1:name=systemd:/docker/" + id + "\n0::/system.slice/docker-" + id + ".scope\n", id},
		{"empty", "", ""},
		{"host process", "0::/user.slice/user-1000.slice/session-2.scope\n", ""},
		{"init", "0::/init.scope\n", ""},
		{"63 hex", "0::/system.slice/docker-" + id[:63] + ".scope\n", ""},
		{"65 hex", "0::/../" + id + "0\n", ""},
		{"not hex", "0::/../" + strings.Repeat("g", 64) + "\n", ""},
		{"lines disagree", "1:cpu:/docker/" + id + "\n0::/system.slice/docker-" + other + ".scope\n", ""},
		{"a sub-cgroup named after another container", "0::/system.slice/docker-" + id + ".scope/" + other + "\n", ""},
		{"bare id not last", "0::/" + id + "/x\n", ""},
		{"no path field", "0:" + id + "\n", ""},
		{"containerd, not docker", "0::/system.slice/cri-containerd-" + id + ".scope\n", ""},
		{"podman scope", "0::/machine.slice/libpod-" + id + ".scope\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ParseCgroup([]byte(tt.file))
			if got != tt.want || ok != (tt.want != "") {
				t.Errorf("ParseCgroup = %q, %v; want %q", got, ok, tt.want)
			}
		})
	}
}

// TestPeerPIDReuse: a connection whose connecting process has exited
// speaks for nobody, even while a cgroup file at its PID names a managed
// container (what a PID reused by another container's process would
// show). The child connects, hands the connection to this process and
// exits; this process then checks in over it. The positive control is the
// same with the child still running.
func TestPeerPIDReuse(t *testing.T) {
	for _, stay := range []bool{true, false} {
		name := "connector exited"
		if stay {
			name = "connector alive (control)"
		}
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, nil)
			fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			mine, theirs := os.NewFile(uintptr(fds[0]), "mine"), os.NewFile(uintptr(fds[1]), "theirs")
			defer mine.Close()
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperConnector$")
			cmd.Env = append(os.Environ(), "AGENTAPI_HELPER_SOCK="+h.sock)
			if stay {
				cmd.Env = append(cmd.Env, "AGENTAPI_HELPER_STAY=1")
			}
			cmd.ExtraFiles = []*os.File{theirs}
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			theirs.Close()
			defer func() { stdin.Close(); cmd.Wait() }()
			h.writeCgroup(cmd.Process.Pid, "0::/system.slice/docker-"+cidA+".scope\n")
			pc, err := net.FileConn(mine)
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			buf, oob := make([]byte, 1), make([]byte, 64)
			_, oobn, _, _, err := pc.(*net.UnixConn).ReadMsgUnix(buf, oob)
			if err != nil {
				t.Fatal(err)
			}
			msgs, err := syscall.ParseSocketControlMessage(oob[:oobn])
			if err != nil || len(msgs) != 1 {
				t.Fatalf("control message: %v", err)
			}
			rfds, err := syscall.ParseUnixRights(&msgs[0])
			if err != nil || len(rfds) != 1 {
				t.Fatalf("rights: %v", err)
			}
			cf := os.NewFile(uintptr(rfds[0]), "agent-conn")
			conn, err := net.FileConn(cf)
			cf.Close()
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if !stay {
				if err := cmd.Wait(); err != nil {
					t.Fatalf("connector: %v", err)
				}
			}
			if _, err := conn.Write([]byte("POST " + api.AgentRouteCheckin + " HTTP/1.1\r\nHost: agent\r\nContent-Length: 2\r\n\r\n{}")); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var b strings.Builder
			bufio.NewReader(resp.Body).WriteTo(&b)
			switch {
			case stay && (resp.StatusCode != 200 || !strings.Contains(b.String(), cidA)):
				t.Errorf("live connector: %d %s", resp.StatusCode, b.String())
			case !stay && (resp.StatusCode != 403 || !strings.Contains(b.String(), `"peer identity could not be verified"`)):
				t.Errorf("exited connector: %d %s", resp.StatusCode, b.String())
			}
		})
	}
}
