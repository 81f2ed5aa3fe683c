// pause: the pod sandbox process of the locally made pause image (the kubelet's sandbox_image).
//
// Why our own: there is no registry to pull registry.k8s.io/pause from, and the upstream one is C. A sandbox
// only has to hold the pod's namespaces open and exit on SIGINT/SIGTERM; as PID 1 of the pod it also reaps
// zombies, like upstream's.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s == syscall.SIGCHLD {
			for {
				var ws syscall.WaitStatus
				pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
			continue
		}
		os.Exit(0)
	}
}
