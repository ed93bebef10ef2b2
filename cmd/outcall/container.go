package main

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"outcall.dev/outcall/pkg/api"
)

// newContainerCmd is `outcall container create|list|inspect|stop|remove|pull`
// (S008-IF-007/008).
func newContainerCmd() *cobra.Command {
	cmd := groupCmd(&cobra.Command{
		Use:   "container",
		Short: "Create, list, inspect, stop and remove agent containers",
		Long: `Create, list, inspect, stop and remove agent containers.

outcalld's Docker manager creates every agent container with the same
hardened profile: one Outcall network, the proxy and DNS filter of that
network, a numeric non-root user, a read-only root, no capabilities, no new
privileges, resource limits, and never a control socket mounted. It lists,
inspects, stops and removes only the containers it created (label
managed-by=outcalld). --network is a suffix like the network commands' --name
(--network staging is outcall-staging); --name is the container's exact name.`,
	})
	cmd.AddCommand(newContainerCreateCmd(), newContainerListCmd(), newContainerInspectCmd(),
		newContainerStopCmd(), newContainerRemoveCmd(), newContainerPullCmd())
	return cmd
}

func newContainerCreateCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "create --image IMAGE [flags] [-- CMD [ARG...]]",
		Short: "Create and start an agent container",
		Long: `Create and start an agent container from a local image (pull it first:
create never pulls). Without --network it joins the default network,
outcall-default; without --name it is named outcall- and 8 random hex
digits. The command and its arguments, if any, follow "--". --memory takes a
number of bytes with an optional unit b, k, m or g (256m is 268435456).
outcalld checks everything else: the user, the limits' floors (6 MiB, 2
shares), the environment, and each volume against the mount deny list.`,
		Args: cobra.ArbitraryArgs,
	}
	f := cmd.Flags()
	f.String("image", "", "image reference, present locally (required)")
	f.String("network", "", "network name suffix (default: the default network)")
	f.String("name", "", "exact container name (default: outcall-<8 hex digits>)")
	f.String("memory", "", "memory limit, e.g. 256m (default: 512m)")
	f.Int64("cpu-shares", 0, "relative CPU weight, at least 2 (default: 1024)")
	f.String("user", "", "numeric non-root UID:GID (default: 65532:65532)")
	f.StringArray("env", nil, "environment variable NAME=VALUE (repeatable)")
	f.StringArray("volume", nil, "bind mount SOURCE:DESTINATION[:ro] (repeatable)")
	f.String("workdir", "", "working directory inside the container (default: the image's)")
	f.Bool("helper-mounts", false, "mount the agent socket and the outcall shim, read-only")
	cmd.RunE = ruleAction(func(cmd *cobra.Command, args []string) error {
		req, err := containerCreateRequest(cmd, args)
		if err != nil {
			return err
		}
		res, err := client(cmd).CreateContainer(cmd.Context(), req)
		if err != nil {
			return err
		}
		if !res.Created {
			return fmt.Errorf("outcalld did not create container %q", res.Name)
		}
		return printLine(cmd, fmt.Sprintf("Container %q created and started.", res.Name))
	})
	return cmd
}

// containerCreateRequest reads create's flags and arguments. Only what the
// CLI alone can judge is refused here (a missing image, a malformed size,
// an env entry without "=", arguments not after "--"); the daemon checks
// the rest, so the rules live in one place.
func containerCreateRequest(cmd *cobra.Command, args []string) (api.ContainerCreateRequest, error) {
	var req api.ContainerCreateRequest
	if err := requireFlags(cmd, "image"); err != nil {
		return req, err
	}
	req.Image, _ = cmd.Flags().GetString("image")
	if len(args) > 0 && cmd.ArgsLenAtDash() != 0 {
		return req, usagef("unexpected argument %q: give the container's command after --", args[0])
	}
	if len(args) > 0 {
		req.Cmd = args
	}
	network, err := optionalFlag(cmd, "network")
	if err != nil {
		return req, err
	}
	if network != nil {
		full := api.NetworkPrefix + *network
		req.Network = &full
	}
	if req.Name, err = optionalFlag(cmd, "name"); err != nil {
		return req, err
	}
	if req.User, err = optionalFlag(cmd, "user"); err != nil {
		return req, err
	}
	memory, err := optionalFlag(cmd, "memory")
	if err != nil {
		return req, err
	}
	if memory != nil {
		n, err := parseSize("memory", *memory)
		if err != nil {
			return req, err
		}
		req.MemoryLimit = &n
	}
	if cmd.Flags().Changed("cpu-shares") {
		n, _ := cmd.Flags().GetInt64("cpu-shares")
		req.CPUShares = &n
	}
	env, _ := cmd.Flags().GetStringArray("env")
	for i, e := range env {
		// The entry is never echoed: its value may be a token.
		if name, _, ok := strings.Cut(e, "="); !ok || name == "" {
			return req, usagef("invalid --env (entry %d): want NAME=VALUE", i+1)
		}
	}
	if len(env) > 0 {
		req.Env = env
	}
	if vols, _ := cmd.Flags().GetStringArray("volume"); len(vols) > 0 {
		req.Volumes = vols
	}
	workdir, err := optionalFlag(cmd, "workdir")
	if err != nil {
		return req, err
	}
	req.WorkingDir = deref(workdir, "")
	req.IncludeHelperMounts, _ = cmd.Flags().GetBool("helper-mounts")
	return req, nil
}

// sizeUnits are the units of a docker-style size, binary as Docker's.
var sizeUnits = map[byte]int64{'b': 1, 'k': 1 << 10, 'm': 1 << 20, 'g': 1 << 30}

// parseSize parses the value of --flag as a docker-style size: decimal
// digits, then optionally one of b, k, m, g in either case (256m is
// 268435456 bytes). Signs, fractions, spaces and two-letter units such as
// "mb" are refused rather than guessed at.
func parseSize(flag, s string) (int64, error) {
	bad := usagef("invalid --%s %q: want a number of bytes with an optional unit b, k, m or g, e.g. 256m", flag, s)
	digits, mult := s, int64(1)
	if n := len(s); n > 0 {
		if m, ok := sizeUnits[s[n-1]|0x20]; ok {
			digits, mult = s[:n-1], m
		}
	}
	if digits == "" || strings.ContainsFunc(digits, func(r rune) bool { return r < '0' || r > '9' }) {
		return 0, bad
	}
	v, err := strconv.ParseInt(digits, 10, 64)
	if err != nil {
		return 0, usagef("invalid --%s %q: too large", flag, s)
	}
	if v > math.MaxInt64/mult {
		return 0, usagef("invalid --%s %q: too large", flag, s)
	}
	return v * mult, nil
}

func newContainerListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the containers outcalld manages",
		Args:  cobra.NoArgs,
		RunE: ruleAction(func(cmd *cobra.Command, _ []string) error {
			cs, err := client(cmd).Containers(cmd.Context())
			if err != nil {
				return err
			}
			if len(cs) == 0 {
				return printLine(cmd, "No agent containers found.")
			}
			// The API promises no order.
			cs = slices.Clone(cs)
			slices.SortStableFunc(cs, func(a, b api.ContainerInfo) int { return strings.Compare(a.Name, b.Name) })
			w := table(cmd)
			fmt.Fprintln(w, "NAME\tIMAGE\tSTATE\tNETWORK\tCREATED")
			for _, c := range cs {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", cell(c.Name), cell(c.Image), cell(c.State), cell(c.Network), cell(c.CreatedAt))
			}
			return w.Flush()
		}),
	}
}

func newContainerInspectCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "inspect --name NAME",
		Short: "Show one managed container (environment names only)",
		Args:  cobra.NoArgs,
	}
	cmd.Flags().String("name", "", "container name (required)")
	cmd.RunE = ruleAction(func(cmd *cobra.Command, _ []string) error {
		if err := requireFlags(cmd, "name"); err != nil {
			return err
		}
		name, _ := cmd.Flags().GetString("name")
		res, err := client(cmd).Container(cmd.Context(), name)
		if err != nil {
			return err
		}
		return printLine(cmd, formatContainerInspect(res))
	})
	return cmd
}

// formatContainerInspect renders S008-IF-008's inspect block, without the
// final newline: labels padded to 14 columns like a network's status,
// mounts and environment as lists indented by two spaces on the lines
// after their label. Environment values are never printed: each entry is
// its name and api.RedactedValue, whatever the daemon sent (S008-FR-015).
func formatContainerInspect(c api.ContainerInspectResult) string {
	lines := []string{
		column("Container:", labelWidth) + cell(c.Name),
		column("ID:", labelWidth) + cell(c.ContainerID),
		column("Image:", labelWidth) + cell(c.Image),
		column("State:", labelWidth) + cell(c.State),
		column("Network:", labelWidth) + cell(c.Network),
		column("IP Address:", labelWidth) + cell(deref(c.IPAddress, "")),
	}
	lines = appendList(lines, "Mounts:", c.Mounts, func(m string) string { return printable(m, false) })
	lines = appendList(lines, "Environment:", c.Env, func(e string) string {
		name, _, _ := strings.Cut(e, "=")
		return printable(name, false) + "=" + api.RedactedValue
	})
	lines = append(lines, column("Created:", labelWidth)+cell(c.CreatedAt))
	return strings.Join(lines, "\n")
}

// appendList adds a labelled list: the label alone, then one indented line
// per item, or the label and "none".
func appendList(lines []string, label string, items []string, format func(string) string) []string {
	if len(items) == 0 {
		return append(lines, column(label, labelWidth)+"none")
	}
	lines = append(lines, label)
	for _, it := range items {
		lines = append(lines, "  "+format(it))
	}
	return lines
}

func newContainerStopCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "stop --name NAME [--timeout SECONDS]",
		Short: "Stop a container: SIGTERM, then SIGKILL after the timeout",
		Args:  cobra.NoArgs,
	}
	cmd.Flags().String("name", "", "container name (required)")
	cmd.Flags().Int64("timeout", api.DefaultStopTimeoutSecs, "seconds between SIGTERM and SIGKILL")
	cmd.RunE = ruleAction(func(cmd *cobra.Command, _ []string) error {
		if err := requireFlags(cmd, "name"); err != nil {
			return err
		}
		req := api.ContainerStopRequest{}
		req.Name, _ = cmd.Flags().GetString("name")
		if cmd.Flags().Changed("timeout") {
			t, _ := cmd.Flags().GetInt64("timeout")
			if t < 0 {
				return usagef("invalid --timeout %d: must be 0 or more seconds", t)
			}
			req.Timeout = &t
		}
		res, err := client(cmd).StopContainer(cmd.Context(), req)
		if err != nil {
			return err
		}
		if !res.Stopped {
			return printLine(cmd, fmt.Sprintf("Container %q is not running (nothing to stop).", res.Name))
		}
		return printLine(cmd, fmt.Sprintf("Container %q stopped.", res.Name))
	})
	return cmd
}

func newContainerRemoveCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "remove --name NAME [--force]",
		Short: "Remove a stopped container and its anonymous volumes",
		Args:  cobra.NoArgs,
	}
	cmd.Flags().String("name", "", "container name (required)")
	cmd.Flags().Bool("force", false, "stop a running container first")
	cmd.RunE = ruleAction(func(cmd *cobra.Command, _ []string) error {
		if err := requireFlags(cmd, "name"); err != nil {
			return err
		}
		req := api.ContainerRemoveRequest{}
		req.Name, _ = cmd.Flags().GetString("name")
		req.Force, _ = cmd.Flags().GetBool("force")
		res, err := client(cmd).RemoveContainer(cmd.Context(), req)
		if err != nil {
			return err
		}
		if !res.Removed {
			return printLine(cmd, fmt.Sprintf("Container %q does not exist (nothing to remove).", res.Name))
		}
		return printLine(cmd, fmt.Sprintf("Container %q removed.", res.Name))
	})
	return cmd
}

func newContainerPullCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pull --image IMAGE",
		Short: "Pull an image ahead of a create",
		Args:  cobra.NoArgs,
	}
	cmd.Flags().String("image", "", "image reference (required)")
	cmd.RunE = ruleAction(func(cmd *cobra.Command, _ []string) error {
		if err := requireFlags(cmd, "image"); err != nil {
			return err
		}
		image, _ := cmd.Flags().GetString("image")
		res, err := client(cmd).PullImage(cmd.Context(), api.ImagePullRequest{Image: image})
		if err != nil {
			return err
		}
		if !res.Pulled {
			return printLine(cmd, fmt.Sprintf("Image %q is already present and current (nothing pulled).", res.Image))
		}
		return printLine(cmd, fmt.Sprintf("Image %q pulled.", res.Image))
	})
	return cmd
}
