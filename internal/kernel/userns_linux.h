#ifndef NIXCELL_USERNS_LINUX_H
#define NIXCELL_USERNS_LINUX_H

// nixcell_userns_child starts a child in a new user namespace that waits
// until wait_fd (a pipe's read end) reaches its end; it closes parent_fd
// (that pipe's write end) first. Returns its PID, or -errno. The child
// runs on memory that *handle holds: free it with nixcell_userns_free once
// the child has been waited for, not before.
int nixcell_userns_child(int wait_fd, int parent_fd, void **handle);
void nixcell_userns_free(void *handle);

#endif
