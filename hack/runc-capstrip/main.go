// runc-capstrip: a runc wrapper that drops CAP_SYS_RESOURCE from an OCI spec before calling the real runc.
//
// Why: on these machines CAP_SYS_RESOURCE is not in the capability bounding set, so runc refuses any spec that
// asks for it ("unable to apply caps") — which is every privileged container (a kind node, kube-proxy). A
// container cannot get a capability its parent lacks anyway, so removing it from the spec changes nothing else.
// It edits the bundle's config.json (create/run: --bundle/-b, default the working directory) and the
// --process/-p file of `runc exec`, then execs the real runc (RUNC_CAPSTRIP_RUNC, default /usr/sbin/runc)
// with the arguments unchanged. Registered as dockerd's default runtime and as containerd's runc BinaryName.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

const dropped = "CAP_SYS_RESOURCE"

func main() {
	args := os.Args[1:]
	cmd, bundle, process := scan(args)
	switch cmd {
	case "create", "run":
		if bundle == "" {
			bundle = "."
		}
		fail(strip(filepath.Join(bundle, "config.json"), true))
	case "exec":
		if process != "" {
			fail(strip(process, false))
		}
	}
	real := os.Getenv("RUNC_CAPSTRIP_RUNC")
	if real == "" {
		real = "/usr/sbin/runc"
	}
	fail(syscall.Exec(real, append([]string{real}, args...), os.Environ()))
}

// scan finds the subcommand and the --bundle / --process values (flags may come as "--x v" or "--x=v").
func scan(args []string) (cmd, bundle, process string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		value := func(names ...string) (string, bool) {
			for _, n := range names {
				if a == n && i+1 < len(args) {
					i++
					return args[i], true
				}
				if strings.HasPrefix(a, n+"=") {
					return strings.TrimPrefix(a, n+"="), true
				}
			}
			return "", false
		}
		if v, ok := value("--bundle", "-b"); ok {
			bundle = v
			continue
		}
		if v, ok := value("--process", "-p"); ok {
			process = v
			continue
		}
		// global flags that take a value, so their value is not mistaken for the subcommand
		if _, ok := value("--root", "--log", "--log-format", "--criu", "--rootless"); ok {
			continue
		}
		if cmd == "" && !strings.HasPrefix(a, "-") {
			cmd = a
		}
	}
	return cmd, bundle, process
}

// strip removes the capability from every set of the spec's process (a whole spec) or of a bare process file.
func strip(path string, spec bool) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	proc := doc
	if spec {
		p, ok := doc["process"].(map[string]any)
		if !ok {
			return nil
		}
		proc = p
	}
	caps, ok := proc["capabilities"].(map[string]any)
	if !ok {
		return nil
	}
	changed := false
	for set, v := range caps {
		list, ok := v.([]any)
		if !ok {
			continue
		}
		kept := make([]any, 0, len(list))
		for _, c := range list {
			if c == dropped {
				changed = true
				continue
			}
			kept = append(kept, c)
		}
		caps[set] = kept
	}
	if !changed {
		return nil
	}
	out, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	info, err := os.Stat(path)
	if err != nil {
		return err
	}
	return os.WriteFile(path, out, info.Mode().Perm())
}

func fail(err error) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "runc-capstrip: %v\n", err)
		os.Exit(1)
	}
}
