"""The candidate's process walled in where Linux allows it: its own PID namespace, and Landlock on files.

Called in the candidate's process before the TARGET is imported (harness.verify.child):
  die_with_parent()  the process is killed (SIGKILL) when the judge's thread that started it ends
  pid_namespace()    the process forks into a new user + PID namespace and goes on as its PID 1; the parent
                     stays outside as a warden that only waits. When PID 1 dies (the judge kills the warden, and
                     PID 1 dies with it), the kernel kills every process of the namespace: nothing the candidate
                     started, detached or not, outlives it, and it cannot signal a process outside
  landlock(read, write)  files: read (and execute) only beneath `read`, write only beneath `write`; no TCP
                     bind or connect; no signals or abstract sockets out of the sandbox (where the ABI has them)
Each returns what it achieved in words, or raises Unavailable with the reason (the verdict then says
`unsandboxed` and why). Landlock through its three system calls with ctypes: the calls are small and stable
(ABI 1-7), and no well-kept Python binding is packaged for pip; user namespaces need no privileges either.
"""
import ctypes
import glob
import os
import platform
import select
import signal

PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
CLONE_NEWUSER, CLONE_NEWPID = 0x10000000, 0x20000000
SYS_LANDLOCK = {"x86_64": (444, 445, 446), "aarch64": (444, 445, 446)}  # create_ruleset, add_rule, restrict_self
# Landlock's file rights by the ABI that added them (include/uapi/linux/landlock.h)
FS_READ = (1 << 0) | (1 << 2) | (1 << 3)  # execute, read file, read dir
FS_FILE = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 14) | (1 << 15)  # the rights that apply to a file
FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
IOCTL_DEV, NET_TCP, SCOPES = 1 << 15, 0b11, 0b11  # rights on /dev (GPU drivers); bind + connect; socket + signal
DEVICES = ["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/shm"]  # and the GPUs' nodes


class Unavailable(Exception):
    """This part of the sandbox cannot be had here: the message says why."""


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _check(result, doing):
    if result < 0:
        errno = ctypes.get_errno()
        raise Unavailable(f"{doing}: {os.strerror(errno)}")
    return result


def die_with_parent(parent_pid):
    """SIGKILL this process when its parent ends; exit now if the parent (`parent_pid`) is already gone."""
    _check(_libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != parent_pid:
        os._exit(1)


def pid_namespace():
    """Go on as PID 1 of a new user + PID namespace (same uid and gid inside); 'own PID namespace', or
    Unavailable. The parent process becomes the warden: it waits for PID 1 and ends as it ended."""
    libc, uid, gid = _libc(), os.getuid(), os.getgid()
    _check(libc.unshare(CLONE_NEWUSER | CLONE_NEWPID), "unshare(CLONE_NEWUSER | CLONE_NEWPID)")
    for name, text in (("uid_map", f"{uid} {uid} 1"), ("setgroups", "deny"), ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)
    alive_r, alive_w = os.pipe()  # the warden holds the write end: EOF here means it is gone
    pid = os.fork()
    if pid == 0:
        os.close(alive_w)
        _check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")
        if select.select([alive_r], [], [], 0)[0]:  # the warden ended before the line above
            os._exit(1)
        os.close(alive_r)
        return "own PID namespace"
    os.close(alive_r)
    _warden(pid)


def _warden(pid):
    """The parent outside the namespace: wait for PID 1, then end the same way (never returns)."""
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, signal.SIG_IGN)  # only the judge ends the candidate: SIGKILL, which takes PID 1 too
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        os._exit(128 + os.WTERMSIG(status))
    os._exit(os.WEXITSTATUS(status))


def landlock(read, write, network=False):
    """Allow reading beneath the paths of `read` and writing beneath those of `write`, nothing else; TCP only
    where `network` (the serving layer's ranks meet over loopback); 'Landlock ABI n', or Unavailable. Paths that
    do not exist are skipped."""
    calls = SYS_LANDLOCK.get(platform.machine())
    if calls is None:
        raise Unavailable(f"Landlock's system call numbers are not known here for {platform.machine()}")
    create, add_rule, restrict = calls
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    abi = _check(libc.syscall(create, None, ctypes.c_size_t(0), ctypes.c_uint32(1)), "Landlock")
    handled = FS_BY_ABI[max(a for a in FS_BY_ABI if a <= abi)]
    attr = (ctypes.c_uint64 * 3)(handled, NET_TCP if abi >= 4 and not network else 0, SCOPES if abi >= 6 else 0)
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    ruleset = _check(libc.syscall(create, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0)),
                     "landlock_create_ruleset")
    try:
        for path in dict.fromkeys(os.path.realpath(p) for p in read):
            _allow(libc, add_rule, ruleset, path, FS_READ & handled)
        for path in write:  # folders the judge made: a link there would widen the walls to wherever it points
            if os.path.realpath(path) != os.path.abspath(path):
                raise Unavailable(f"the writable folder {path} is reached through a link")
            _allow(libc, add_rule, ruleset, path, handled)
        for device in DEVICES + glob.glob("/dev/nvidia*") + glob.glob("/dev/dri/*"):  # no terminal, no disk
            _allow(libc, add_rule, ruleset, device, (FS_READ | (1 << 1) | IOCTL_DEV) & handled)
        _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
        _check(libc.syscall(restrict, ruleset, ctypes.c_uint32(0)), "landlock_restrict_self")
    finally:
        os.close(ruleset)
    return f"Landlock ABI {abi}"


def _allow(libc, add_rule, ruleset, path, rights):
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return  # nothing there: nothing to allow
    try:
        if not os.path.isdir(path):
            rights &= FS_FILE
        beneath = (ctypes.c_uint8 * 12)()  # struct landlock_path_beneath_attr (packed): u64 access, s32 fd
        ctypes.memmove(beneath, ctypes.byref(ctypes.c_uint64(rights)), 8)
        ctypes.memmove(ctypes.addressof(beneath) + 8, ctypes.byref(ctypes.c_int32(fd)), 4)
        _check(libc.syscall(add_rule, ruleset, 1, ctypes.byref(beneath), ctypes.c_uint32(0)),
               f"landlock_add_rule({path})")
    finally:
        os.close(fd)
