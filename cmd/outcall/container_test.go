package main

import (
	"strings"
	"testing"
)

const (
	createdA3f7 = `{"success":true,"data":{"container_id":"4f3e2d1c","name":"outcall-a3f7b201","created":true}}`
	inspectA3f7 = `{"success":true,"data":{"container_id":"4f3e2d1c0b9a","name":"outcall-a3f7b201","image":"my-agent:latest","state":"running",` +
		`"network":"outcall-default","ip_address":"10.200.0.2","mounts":["/run/outcall/agent.sock:/run/outcall/agent.sock:ro",` +
		`"/usr/local/bin/outcall-agent:/usr/local/bin/outcall:ro"],"env":["HTTP_PROXY=<redacted>","HTTPS_PROXY=<redacted>","NO_PROXY=<redacted>"],` +
		`"created_at":"2026-04-21T14:30:00Z"}}`
	inspectA3f7Out = "" +
		"Container:    outcall-a3f7b201\n" +
		"ID:           4f3e2d1c0b9a\n" +
		"Image:        my-agent:latest\n" +
		"State:        running\n" +
		"Network:      outcall-default\n" +
		"IP Address:   10.200.0.2\n" +
		"Mounts:\n" +
		"  /run/outcall/agent.sock:/run/outcall/agent.sock:ro\n" +
		"  /usr/local/bin/outcall-agent:/usr/local/bin/outcall:ro\n" +
		"Environment:\n" +
		"  HTTP_PROXY=<redacted>\n" +
		"  HTTPS_PROXY=<redacted>\n" +
		"  NO_PROXY=<redacted>\n" +
		"Created:      2026-04-21T14:30:00Z\n"
	bindDenied = `{"success":false,"error":"bind mount denied - \"/run/outcall\" exposes protected host path \"/run/outcall/host.sock\""}`
	unmanaged  = `{"success":false,"error":"container \"postgres\" is not managed by outcalld"}`
)

// TestContainerCLI runs S008-IF-007/008 and the CLI side of S008-AS-001..
// 012, 015, 016 against a fake daemon: the requests the CLI sends, its
// output and exit code.
func TestContainerCLI(t *testing.T) {
	runCases(t, []cliCase{
		// create
		{
			name:     "create on the default network (AS-001)",
			args:     []string{"container", "create", "--image", "my-agent:latest"},
			routes:   map[string]string{"POST /api/v1/container/create": createdA3f7},
			wantOut:  "Container \"outcall-a3f7b201\" created and started.\n",
			wantReqs: []string{`POST /api/v1/container/create {"image":"my-agent:latest"}`},
		},
		{
			name:     "create on a network given by its suffix",
			args:     []string{"container", "create", "--image", "my-agent:latest", "--network", "staging"},
			routes:   map[string]string{"POST /api/v1/container/create": createdA3f7},
			wantOut:  "Container \"outcall-a3f7b201\" created and started.\n",
			wantReqs: []string{`POST /api/v1/container/create {"image":"my-agent:latest","network":"outcall-staging"}`},
		},
		{
			name:     "create with an exact name",
			args:     []string{"container", "create", "--image", "my-agent:latest", "--name", "my-task"},
			routes:   map[string]string{"POST /api/v1/container/create": `{"success":true,"data":{"container_id":"9a8b","name":"my-task","created":true}}`},
			wantOut:  "Container \"my-task\" created and started.\n",
			wantReqs: []string{`POST /api/v1/container/create {"image":"my-agent:latest","name":"my-task"}`},
		},
		{
			name:     "create with limits (AS-012)",
			args:     []string{"container", "create", "--image", "my-agent:latest", "--memory", "256m", "--cpu-shares", "512"},
			routes:   map[string]string{"POST /api/v1/container/create": createdA3f7},
			wantOut:  "Container \"outcall-a3f7b201\" created and started.\n",
			wantReqs: []string{`POST /api/v1/container/create {"image":"my-agent:latest","memory_limit":268435456,"cpu_shares":512}`},
		},
		{
			name: "create with every flag and a command",
			args: []string{"container", "create", "--image", "my-agent:latest", "--network", "staging", "--name", "my-task",
				"--memory", "1G", "--cpu-shares", "2", "--user", "1000:1000", "--env", "MY_VAR=value", "--env", "LIST=a,b=c",
				"--volume", "/host/project:/workspace", "--volume", "/host/ro:/data:ro", "--workdir", "/workspace", "--helper-mounts",
				"--socket", "$SOCK", "--", "run-agent", "--verbose", "-x"},
			routes:  map[string]string{"POST /api/v1/container/create": `{"success":true,"data":{"container_id":"9a8b","name":"my-task","created":true}}`},
			wantOut: "Container \"my-task\" created and started.\n",
			wantReqs: []string{`POST /api/v1/container/create {"image":"my-agent:latest","network":"outcall-staging","name":"my-task","user":"1000:1000",` +
				`"memory_limit":1073741824,"cpu_shares":2,"env":["MY_VAR=value","LIST=a,b=c"],"cmd":["run-agent","--verbose","-x"],` +
				`"working_dir":"/workspace","volumes":["/host/project:/workspace","/host/ro:/data:ro"],"include_outcall_helper_mounts":true}`},
		},
		{
			name:     "create with a size in bytes",
			args:     []string{"container", "create", "--image", "a", "--memory", "7340032"},
			routes:   map[string]string{"POST /api/v1/container/create": createdA3f7},
			wantOut:  "Container \"outcall-a3f7b201\" created and started.\n",
			wantReqs: []string{`POST /api/v1/container/create {"image":"a","memory_limit":7340032}`},
		},
		{
			name:     "create with a size in kibibytes",
			args:     []string{"container", "create", "--image", "a", "--memory", "8192k", "--socket", "$SOCK"},
			routes:   map[string]string{"POST /api/v1/container/create": createdA3f7},
			wantOut:  "Container \"outcall-a3f7b201\" created and started.\n",
			wantReqs: []string{`POST /api/v1/container/create {"image":"a","memory_limit":8388608}`},
		},
		{
			name:     "create leaves the memory floor to the daemon",
			args:     []string{"container", "create", "--image", "a", "--memory", "1m"},
			routes:   map[string]string{"POST /api/v1/container/create": `{"success":false,"error":"invalid memory_limit 1048576: must be at least 6291456 bytes (6 MiB)"}`},
			wantErr:  "Error: invalid memory_limit 1048576: must be at least 6291456 bytes (6 MiB)\n",
			wantCode: 1,
			wantReqs: []string{`POST /api/v1/container/create {"image":"a","memory_limit":1048576}`},
		},
		{
			name:     "create with a zero cpu weight is sent, not dropped",
			args:     []string{"container", "create", "--image", "a", "--cpu-shares", "0"},
			routes:   map[string]string{"POST /api/v1/container/create": `{"success":false,"error":"invalid cpu_shares 0: must be at least 2"}`},
			wantErr:  "Error: invalid cpu_shares 0: must be at least 2\n",
			wantCode: 1,
			wantReqs: []string{`POST /api/v1/container/create {"image":"a","cpu_shares":0}`},
		},
		{
			name:     "create binding a protected path (AS-002)",
			args:     []string{"container", "create", "--image", "a", "--volume", "/run/outcall:/x"},
			routes:   map[string]string{"POST /api/v1/container/create": bindDenied},
			wantErr:  "Error: bind mount denied - \"/run/outcall\" exposes protected host path \"/run/outcall/host.sock\"\n",
			wantCode: 1,
			wantReqs: []string{`POST /api/v1/container/create {"image":"a","volumes":["/run/outcall:/x"]}`},
		},
		{
			name:     "create shadowing the shim (AS-015)",
			args:     []string{"container", "create", "--image", "a", "--helper-mounts", "--volume", "/tmp/x:/usr/local/bin"},
			routes:   map[string]string{"POST /api/v1/container/create": `{"success":false,"error":"volumes[0]: destination \"/usr/local/bin\" covers protected path \"/usr/local/bin/outcall\""}`},
			wantErr:  "Error: volumes[0]: destination \"/usr/local/bin\" covers protected path \"/usr/local/bin/outcall\"\n",
			wantCode: 1,
			wantReqs: []string{`POST /api/v1/container/create {"image":"a","volumes":["/tmp/x:/usr/local/bin"],"include_outcall_helper_mounts":true}`},
		},
		{
			name:     "create without the network (AS-006)",
			args:     []string{"container", "create", "--image", "a"},
			routes:   map[string]string{"POST /api/v1/container/create": `{"success":false,"error":"network \"outcall-default\" does not exist"}`},
			wantErr:  "Error: network \"outcall-default\" does not exist\n",
			wantCode: 1,
			wantReqs: []string{`POST /api/v1/container/create {"image":"a"}`},
		},
		{
			name:     "create of an image not present (EC-005)",
			args:     []string{"container", "create", "--image", "a"},
			routes:   map[string]string{"POST /api/v1/container/create": `{"success":false,"error":"image \"a\" not found locally — pull it first"}`},
			wantErr:  "Error: image \"a\" not found locally — pull it first\n",
			wantCode: 1,
			wantReqs: []string{`POST /api/v1/container/create {"image":"a"}`},
		},
		{
			name:     "create with Docker unreachable (AS-010)",
			args:     []string{"container", "create", "--image", "a"},
			routes:   map[string]string{"POST /api/v1/container/create": `{"success":false,"error":"docker unavailable: ping timed out after 3s"}`},
			wantErr:  "Error: docker unavailable: ping timed out after 3s\n",
			wantCode: 1,
			wantReqs: []string{`POST /api/v1/container/create {"image":"a"}`},
		},
		{
			name:     "create the daemon answers without creating",
			args:     []string{"container", "create", "--image", "a", "--name", "my-task"},
			routes:   map[string]string{"POST /api/v1/container/create": `{"success":true,"data":{"container_id":"","name":"my-task","created":false}}`},
			wantErr:  "Error: outcalld did not create container \"my-task\"\n",
			wantCode: 1,
			wantReqs: []string{`POST /api/v1/container/create {"image":"a","name":"my-task"}`},
		},
		{
			name:     "create without an image",
			args:     []string{"container", "create", "--network", "staging"},
			wantErr:  "Error: missing required flag --image\n",
			wantCode: 2,
		},
		{
			name:     "create with a bad memory size",
			args:     []string{"container", "create", "--image", "a", "--memory", "256mb"},
			wantErr:  "Error: invalid --memory \"256mb\": want a number of bytes with an optional unit b, k, m or g, e.g. 256m\n",
			wantCode: 2,
		},
		{
			name:     "create with a fractional memory size",
			args:     []string{"container", "create", "--image", "a", "--memory", "1.5g"},
			wantErr:  "Error: invalid --memory \"1.5g\": want a number of bytes with an optional unit b, k, m or g, e.g. 256m\n",
			wantCode: 2,
		},
		{
			name:     "create with a negative memory size",
			args:     []string{"container", "create", "--image", "a", "--memory=-5m"},
			wantErr:  "Error: invalid --memory \"-5m\": want a number of bytes with an optional unit b, k, m or g, e.g. 256m\n",
			wantCode: 2,
		},
		{
			name:     "create with a unit alone",
			args:     []string{"container", "create", "--image", "a", "--memory", "m"},
			wantErr:  "Error: invalid --memory \"m\": want a number of bytes with an optional unit b, k, m or g, e.g. 256m\n",
			wantCode: 2,
		},
		{
			name:     "create with a memory size too large",
			args:     []string{"container", "create", "--image", "a", "--memory", "9000000000g"},
			wantErr:  "Error: invalid --memory \"9000000000g\": too large\n",
			wantCode: 2,
		},
		{
			name:     "create with an empty memory size",
			args:     []string{"container", "create", "--image", "a", "--memory="},
			wantErr:  "Error: invalid --memory: must not be empty\n",
			wantCode: 2,
		},
		{
			name:     "create with a cpu weight that is not a number",
			args:     []string{"container", "create", "--image", "a", "--cpu-shares", "lots"},
			wantErr:  "Error: invalid argument \"lots\" for \"--cpu-shares\" flag: strconv.ParseInt: parsing \"lots\": invalid syntax\n",
			wantCode: 2,
		},
		{
			name:     "create with an env entry without a value never echoes it",
			args:     []string{"container", "create", "--image", "a", "--env", "A=1", "--env", "ghp_secret"},
			wantErr:  "Error: invalid --env (entry 2): want NAME=VALUE\n",
			wantCode: 2,
		},
		{
			name:     "create with an env entry without a name",
			args:     []string{"container", "create", "--image", "a", "--env", "=value"},
			wantErr:  "Error: invalid --env (entry 1): want NAME=VALUE\n",
			wantCode: 2,
		},
		{
			name:     "create with an empty name",
			args:     []string{"container", "create", "--image", "a", "--name="},
			wantErr:  "Error: invalid --name: must not be empty\n",
			wantCode: 2,
		},
		{
			name:     "create with an empty network",
			args:     []string{"container", "create", "--image", "a", "--network", ""},
			wantErr:  "Error: invalid --network: must not be empty\n",
			wantCode: 2,
		},
		{
			name:     "create with a command not after --",
			args:     []string{"container", "create", "--image", "a", "run-agent"},
			wantErr:  "Error: unexpected argument \"run-agent\": give the container's command after --\n",
			wantCode: 2,
		},
		{
			name:     "create with arguments on both sides of --",
			args:     []string{"container", "create", "--image", "a", "sh", "--", "-c", "true"},
			wantErr:  "Error: unexpected argument \"sh\": give the container's command after --\n",
			wantCode: 2,
		},
		{
			name:     "create with a bare -- has no command",
			args:     []string{"container", "create", "--image", "a", "--socket", "$SOCK", "--"},
			routes:   map[string]string{"POST /api/v1/container/create": createdA3f7},
			wantOut:  "Container \"outcall-a3f7b201\" created and started.\n",
			wantReqs: []string{`POST /api/v1/container/create {"image":"a"}`},
		},
		{
			name:     "create with the daemon down (AS-009)",
			args:     []string{"container", "create", "--image", "a", "--socket", "$MISSING"},
			wantErr:  daemonDown,
			wantCode: 1,
		},

		// list
		{
			name: "list, sorted by name (AS-003)",
			args: []string{"container", "list"},
			routes: map[string]string{"GET /api/v1/containers": `{"success":true,"data":[` +
				`{"container_id":"9a8b","name":"outcall-a3f7b201","image":"my-agent:latest","state":"running","network":"outcall-default","created_at":"2026-04-21T14:30:00Z"},` +
				`{"container_id":"4f3e","name":"my-task","image":"registry.example:5000/team/agent:dev","state":"exited","network":"outcall-staging","created_at":"2026-04-21T15:00:00Z"}]}`},
			wantOut: "" +
				"NAME              IMAGE                                 STATE    NETWORK          CREATED\n" +
				"my-task           registry.example:5000/team/agent:dev  exited   outcall-staging  2026-04-21T15:00:00Z\n" +
				"outcall-a3f7b201  my-agent:latest                       running  outcall-default  2026-04-21T14:30:00Z\n",
			wantReqs: []string{"GET /api/v1/containers"},
		},
		{
			name: "list escapes what it did not write",
			args: []string{"container", "list"},
			routes: map[string]string{"GET /api/v1/containers": `{"success":true,"data":[` +
				`{"container_id":"9a8b","name":"evil\u001b[2J\tname","image":"","state":"created","network":"outcall-default","created_at":"2026-04-21T14:30:00Z"}]}`},
			wantOut: "" +
				"NAME               IMAGE  STATE    NETWORK          CREATED\n" +
				"evil\\x1b[2J\\tname  -      created  outcall-default  2026-04-21T14:30:00Z\n",
			wantReqs: []string{"GET /api/v1/containers"},
		},
		{
			name:     "list of none",
			args:     []string{"container", "list"},
			routes:   map[string]string{"GET /api/v1/containers": `{"success":true,"data":[]}`},
			wantOut:  "No agent containers found.\n",
			wantReqs: []string{"GET /api/v1/containers"},
		},
		{
			name:     "list with Docker unreachable",
			args:     []string{"container", "list"},
			routes:   map[string]string{"GET /api/v1/containers": `{"success":false,"error":"docker manager unavailable: this outcalld runs without one, so it cannot create or manage containers"}`},
			wantErr:  "Error: docker manager unavailable: this outcalld runs without one, so it cannot create or manage containers\n",
			wantCode: 1,
			wantReqs: []string{"GET /api/v1/containers"},
		},
		{
			name:     "list with an argument",
			args:     []string{"container", "list", "all"},
			wantErr:  "Error: unknown command \"all\" for \"outcall container list\"\n",
			wantCode: 2,
		},
		{
			name:     "list with the daemon down (AS-009)",
			args:     []string{"container", "list", "--socket", "$MISSING"},
			wantErr:  daemonDown,
			wantCode: 1,
		},

		// inspect
		{
			name:     "inspect (AS-007)",
			args:     []string{"container", "inspect", "--name", "outcall-a3f7b201"},
			routes:   map[string]string{"GET /api/v1/container?name=outcall-a3f7b201": inspectA3f7},
			wantOut:  inspectA3f7Out,
			wantReqs: []string{"GET /api/v1/container?name=outcall-a3f7b201"},
		},
		{
			name: "inspect never prints an environment value",
			args: []string{"container", "inspect", "--name", "my-task"},
			routes: map[string]string{"GET /api/v1/container?name=my-task": `{"success":true,"data":{"container_id":"9a8b","name":"my-task","image":"a",` +
				`"state":"running","network":"outcall-default","ip_address":"10.200.0.3","mounts":[],"env":["GITHUB_TOKEN=ghp_secret","BARE"],"created_at":"2026-04-21T14:30:00Z"}}`},
			wantOut: "" +
				"Container:    my-task\n" +
				"ID:           9a8b\n" +
				"Image:        a\n" +
				"State:        running\n" +
				"Network:      outcall-default\n" +
				"IP Address:   10.200.0.3\n" +
				"Mounts:       none\n" +
				"Environment:\n" +
				"  GITHUB_TOKEN=<redacted>\n" +
				"  BARE=<redacted>\n" +
				"Created:      2026-04-21T14:30:00Z\n",
			wantReqs: []string{"GET /api/v1/container?name=my-task"},
		},
		{
			name: "inspect a stopped container without address",
			args: []string{"container", "inspect", "--name", "a&b c"},
			routes: map[string]string{"GET /api/v1/container?name=a%26b+c": `{"success":true,"data":{"container_id":"9a8b","name":"a&b c","image":"a",` +
				`"state":"exited","network":"outcall-default","ip_address":null,"mounts":[],"env":[],"created_at":"2026-04-21T14:30:00Z"}}`},
			wantOut: "" +
				"Container:    a&b c\n" +
				"ID:           9a8b\n" +
				"Image:        a\n" +
				"State:        exited\n" +
				"Network:      outcall-default\n" +
				"IP Address:   -\n" +
				"Mounts:       none\n" +
				"Environment:  none\n" +
				"Created:      2026-04-21T14:30:00Z\n",
			wantReqs: []string{"GET /api/v1/container?name=a%26b+c"},
		},
		{
			name:     "inspect of a missing container",
			args:     []string{"container", "inspect", "--name", "outcall-xyz"},
			routes:   map[string]string{"GET /api/v1/container?name=outcall-xyz": `{"success":false,"error":"container \"outcall-xyz\" does not exist"}`},
			wantErr:  "Error: container \"outcall-xyz\" does not exist\n",
			wantCode: 1,
			wantReqs: []string{"GET /api/v1/container?name=outcall-xyz"},
		},
		{
			name:     "inspect of an unmanaged container (AS-016)",
			args:     []string{"container", "inspect", "--name", "postgres"},
			routes:   map[string]string{"GET /api/v1/container?name=postgres": unmanaged},
			wantErr:  "Error: container \"postgres\" is not managed by outcalld\n",
			wantCode: 1,
			wantReqs: []string{"GET /api/v1/container?name=postgres"},
		},
		{
			name:     "inspect without a name",
			args:     []string{"container", "inspect"},
			wantErr:  "Error: missing required flag --name\n",
			wantCode: 2,
		},
		{
			name:     "inspect with the name as an argument",
			args:     []string{"container", "inspect", "my-task"},
			wantErr:  "Error: unknown command \"my-task\" for \"outcall container inspect\"\n",
			wantCode: 2,
		},
		{
			name:     "inspect with the daemon down (AS-009)",
			args:     []string{"container", "inspect", "--name", "a", "--socket", "$MISSING"},
			wantErr:  daemonDown,
			wantCode: 1,
		},

		// stop
		{
			name:     "stop (AS-004)",
			args:     []string{"container", "stop", "--name", "outcall-a3f7b201"},
			routes:   map[string]string{"POST /api/v1/container/stop": `{"success":true,"data":{"name":"outcall-a3f7b201","stopped":true}}`},
			wantOut:  "Container \"outcall-a3f7b201\" stopped.\n",
			wantReqs: []string{`POST /api/v1/container/stop {"name":"outcall-a3f7b201"}`},
		},
		{
			name:     "stop with a timeout",
			args:     []string{"container", "stop", "--name", "outcall-a3f7b201", "--timeout", "30"},
			routes:   map[string]string{"POST /api/v1/container/stop": `{"success":true,"data":{"name":"outcall-a3f7b201","stopped":true}}`},
			wantOut:  "Container \"outcall-a3f7b201\" stopped.\n",
			wantReqs: []string{`POST /api/v1/container/stop {"name":"outcall-a3f7b201","timeout":30}`},
		},
		{
			name:     "stop with a zero timeout kills at once",
			args:     []string{"container", "stop", "--name", "outcall-a3f7b201", "--timeout", "0"},
			routes:   map[string]string{"POST /api/v1/container/stop": `{"success":true,"data":{"name":"outcall-a3f7b201","stopped":true}}`},
			wantOut:  "Container \"outcall-a3f7b201\" stopped.\n",
			wantReqs: []string{`POST /api/v1/container/stop {"name":"outcall-a3f7b201","timeout":0}`},
		},
		{
			name:     "stop of a stopped container (EC-007)",
			args:     []string{"container", "stop", "--name", "outcall-a3f7b201"},
			routes:   map[string]string{"POST /api/v1/container/stop": `{"success":true,"data":{"name":"outcall-a3f7b201","stopped":false}}`},
			wantOut:  "Container \"outcall-a3f7b201\" is not running (nothing to stop).\n",
			wantReqs: []string{`POST /api/v1/container/stop {"name":"outcall-a3f7b201"}`},
		},
		{
			name:     "stop of a missing container (EC-004)",
			args:     []string{"container", "stop", "--name", "outcall-xyz"},
			routes:   map[string]string{"POST /api/v1/container/stop": `{"success":false,"error":"container \"outcall-xyz\" does not exist"}`},
			wantErr:  "Error: container \"outcall-xyz\" does not exist\n",
			wantCode: 1,
			wantReqs: []string{`POST /api/v1/container/stop {"name":"outcall-xyz"}`},
		},
		{
			name:     "stop of an unmanaged container (AS-016)",
			args:     []string{"container", "stop", "--name", "postgres"},
			routes:   map[string]string{"POST /api/v1/container/stop": unmanaged},
			wantErr:  "Error: container \"postgres\" is not managed by outcalld\n",
			wantCode: 1,
			wantReqs: []string{`POST /api/v1/container/stop {"name":"postgres"}`},
		},
		{
			name:     "stop with a negative timeout",
			args:     []string{"container", "stop", "--name", "a", "--timeout=-1"},
			wantErr:  "Error: invalid --timeout -1: must be 0 or more seconds\n",
			wantCode: 2,
		},
		{
			name:     "stop without a name",
			args:     []string{"container", "stop", "--timeout", "5"},
			wantErr:  "Error: missing required flag --name\n",
			wantCode: 2,
		},
		{
			name:     "stop with the daemon down (AS-009)",
			args:     []string{"container", "stop", "--name", "a", "--socket", "$MISSING"},
			wantErr:  daemonDown,
			wantCode: 1,
		},

		// remove
		{
			name:     "remove (AS-005)",
			args:     []string{"container", "remove", "--name", "outcall-a3f7b201"},
			routes:   map[string]string{"POST /api/v1/container/remove": `{"success":true,"data":{"name":"outcall-a3f7b201","removed":true}}`},
			wantOut:  "Container \"outcall-a3f7b201\" removed.\n",
			wantReqs: []string{`POST /api/v1/container/remove {"name":"outcall-a3f7b201"}`},
		},
		{
			name:     "remove forced",
			args:     []string{"container", "remove", "--name", "outcall-a3f7b201", "--force"},
			routes:   map[string]string{"POST /api/v1/container/remove": `{"success":true,"data":{"name":"outcall-a3f7b201","removed":true}}`},
			wantOut:  "Container \"outcall-a3f7b201\" removed.\n",
			wantReqs: []string{`POST /api/v1/container/remove {"name":"outcall-a3f7b201","force":true}`},
		},
		{
			name:     "remove of a missing container (EC-008)",
			args:     []string{"container", "remove", "--name", "outcall-xyz"},
			routes:   map[string]string{"POST /api/v1/container/remove": `{"success":true,"data":{"name":"outcall-xyz","removed":false}}`},
			wantOut:  "Container \"outcall-xyz\" does not exist (nothing to remove).\n",
			wantReqs: []string{`POST /api/v1/container/remove {"name":"outcall-xyz"}`},
		},
		{
			name:     "remove of a running container",
			args:     []string{"container", "remove", "--name", "outcall-a3f7b201"},
			routes:   map[string]string{"POST /api/v1/container/remove": `{"success":false,"error":"container \"outcall-a3f7b201\" is still running — stop it first or use force"}`},
			wantErr:  "Error: container \"outcall-a3f7b201\" is still running — stop it first or use force\n",
			wantCode: 1,
			wantReqs: []string{`POST /api/v1/container/remove {"name":"outcall-a3f7b201"}`},
		},
		{
			name:     "remove of an unmanaged container (AS-016)",
			args:     []string{"container", "remove", "--name", "postgres", "--force"},
			routes:   map[string]string{"POST /api/v1/container/remove": unmanaged},
			wantErr:  "Error: container \"postgres\" is not managed by outcalld\n",
			wantCode: 1,
			wantReqs: []string{`POST /api/v1/container/remove {"name":"postgres","force":true}`},
		},
		{
			name:     "remove without a name",
			args:     []string{"container", "remove", "--force"},
			wantErr:  "Error: missing required flag --name\n",
			wantCode: 2,
		},
		{
			name:     "remove with the daemon down (AS-009)",
			args:     []string{"container", "remove", "--name", "a", "--socket", "$MISSING"},
			wantErr:  daemonDown,
			wantCode: 1,
		},

		// pull
		{
			name:     "pull (AS-008)",
			args:     []string{"container", "pull", "--image", "my-agent:latest"},
			routes:   map[string]string{"POST /api/v1/container/pull": `{"success":true,"data":{"image":"my-agent:latest","pulled":true}}`},
			wantOut:  "Image \"my-agent:latest\" pulled.\n",
			wantReqs: []string{`POST /api/v1/container/pull {"image":"my-agent:latest"}`},
		},
		{
			name:     "pull of an image already current",
			args:     []string{"container", "pull", "--image", "my-agent:latest"},
			routes:   map[string]string{"POST /api/v1/container/pull": `{"success":true,"data":{"image":"my-agent:latest","pulled":false}}`},
			wantOut:  "Image \"my-agent:latest\" is already present and current (nothing pulled).\n",
			wantReqs: []string{`POST /api/v1/container/pull {"image":"my-agent:latest"}`},
		},
		{
			name:     "pull of a digest reference (AS-019) is sent as it is",
			args:     []string{"container", "pull", "--image", "registry.example:5000/team/agent@sha256:" + strings.Repeat("ab", 32)},
			routes:   map[string]string{"POST /api/v1/container/pull": `{"success":true,"data":{"image":"registry.example:5000/team/agent@sha256:` + strings.Repeat("ab", 32) + `","pulled":true}}`},
			wantOut:  "Image \"registry.example:5000/team/agent@sha256:" + strings.Repeat("ab", 32) + "\" pulled.\n",
			wantReqs: []string{`POST /api/v1/container/pull {"image":"registry.example:5000/team/agent@sha256:` + strings.Repeat("ab", 32) + `"}`},
		},
		{
			name:     "pull that fails upstream (EC-006)",
			args:     []string{"container", "pull", "--image", "my-agent:latest"},
			routes:   map[string]string{"POST /api/v1/container/pull": `{"success":false,"error":"failed to pull image \"my-agent:latest\": not found"}`},
			wantErr:  "Error: failed to pull image \"my-agent:latest\": not found\n",
			wantCode: 1,
			wantReqs: []string{`POST /api/v1/container/pull {"image":"my-agent:latest"}`},
		},
		{
			name:     "pull without an image",
			args:     []string{"container", "pull"},
			wantErr:  "Error: missing required flag --image\n",
			wantCode: 2,
		},
		{
			name:     "pull with the daemon down (AS-009)",
			args:     []string{"container", "pull", "--image", "a", "--socket", "$MISSING"},
			wantErr:  daemonDown,
			wantCode: 1,
		},

		// the group
		{
			name:     "unknown subcommand",
			args:     []string{"container", "run"},
			wantErr:  "Error: unknown command \"run\" for \"outcall container\"\n",
			wantCode: 2,
		},
	})
}

// TestParseSize: docker-style sizes, binary units, either case; anything
// else refused with the flag named.
func TestParseSize(t *testing.T) {
	good := map[string]int64{
		"0": 0, "6291456": 6291456, "512b": 512, "512B": 512, "4k": 4096, "4K": 4096,
		"256m": 268435456, "256M": 268435456, "1g": 1 << 30, "8G": 8 << 30, "007m": 7 << 20,
		"9223372036854775807": 1<<63 - 1, "8589934591g": 8589934591 << 30,
	}
	for in, want := range good {
		if got, err := parseSize("memory", in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "m", "-1", "+1", "1.5g", "1 g", "256mb", "1t", "1e6", "0x10", "١٢", "8589934592g", "9223372036854775808"} {
		if got, err := parseSize("memory", in); err == nil || !strings.Contains(err.Error(), "invalid --memory") {
			t.Errorf("parseSize(%q) = %d, %v; want an error naming --memory", in, got, err)
		}
	}
}
