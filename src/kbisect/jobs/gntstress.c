/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * gntstress - grant-map stress program for Xen hosts (part of kbisect).
 *
 * It grants pages of our own domain through /dev/xen/gntalloc, maps those grants back through
 * /dev/xen/gntdev and then drives the gntdev mapping through the kernel paths that tell the
 * gntdev_mmap() VMA flag variants apart: get_user_pages() users (O_DIRECT, io_submit, vmsplice,
 * process_vm_readv, /proc/PID/mem, move_pages), NUMA balancing, and the flag-independent VMA rules
 * (VM_DONTCOPY, VM_DONTEXPAND, partial munmap, map/unmap churn).
 *
 * Every subtest runs in its own forked child (own process group) under its own deadline; a child
 * killed by a signal or running past its deadline is reported as FAIL and the next subtest runs.
 *
 * Output on stdout, one line per subtest, then a summary (anything else goes to stderr):
 *   GNTSTRESS <name> <PASS|FAIL|SKIP> errno=<n> detail=<text to end of line>
 *   GNTSTRESS-SUMMARY pass=N fail=N skip=N
 * Exit status: 0 no subtest failed (all PASS or SKIP), 1 at least one FAIL, 2 usage error,
 * 3 internal error (gntstress itself could not fork or allocate; the subtest is shown as SKIP).
 *
 * Build: gcc -static -O2 -Wall -Wextra -o gntstress gntstress.c (no library beyond libc).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------------------------------ */
/* Kernel ABI facts, declared here rather than included (the build needs libc headers only).   */
/* ------------------------------------------------------------------------------------------ */

/*
 * ioctl number encoding, include/uapi/asm-generic/ioctl.h (x86): nr in bits 0-7, type in bits
 * 8-15, size in bits 16-29, direction in bits 30-31, and _IOC_NONE is 0. The Xen grant devices
 * use _IOC(_IOC_NONE, 'G', nr, sizeof(struct ...)).
 */
#define GS_IOC_NONE(type, nr, size) \
	((unsigned long)(((unsigned long)(size) << 16) | ((unsigned long)(type) << 8) | (unsigned long)(nr)))

/* include/uapi/xen/gntalloc.h: struct ioctl_gntalloc_alloc_gref (variable length). */
struct gs_gntalloc_alloc_gref {
	uint16_t domid;       /* IN: domain to be given access to the grants */
	uint16_t flags;       /* IN: GNTALLOC_FLAG_WRITABLE */
	uint32_t count;       /* IN: number of pages */
	uint64_t index;       /* OUT: offset for mmap() of the gntalloc fd */
	uint32_t gref_ids[1]; /* OUT: one grant reference per page, count entries */
};
/* include/uapi/xen/gntalloc.h: struct ioctl_gntalloc_dealloc_gref. */
struct gs_gntalloc_dealloc_gref {
	uint64_t index;
	uint32_t count;
};
#define GS_GNTALLOC_FLAG_WRITABLE 1
#define GS_IOCTL_GNTALLOC_ALLOC_GREF GS_IOC_NONE('G', 5, sizeof(struct gs_gntalloc_alloc_gref))
#define GS_IOCTL_GNTALLOC_DEALLOC_GREF GS_IOC_NONE('G', 6, sizeof(struct gs_gntalloc_dealloc_gref))

/* include/uapi/xen/gntdev.h: struct ioctl_gntdev_grant_ref. */
struct gs_gntdev_grant_ref {
	uint32_t domid;
	uint32_t ref;
};
/* include/uapi/xen/gntdev.h: struct ioctl_gntdev_map_grant_ref (variable length). */
struct gs_gntdev_map_grant_ref {
	uint32_t count; /* IN */
	uint32_t pad;
	uint64_t index; /* OUT: offset for mmap() of the gntdev fd */
	struct gs_gntdev_grant_ref refs[1];
};
/* include/uapi/xen/gntdev.h: struct ioctl_gntdev_unmap_grant_ref. */
struct gs_gntdev_unmap_grant_ref {
	uint64_t index;
	uint32_t count;
	uint32_t pad;
};
/* include/uapi/xen/gntdev.h: struct ioctl_gntdev_get_offset_for_vaddr. */
struct gs_gntdev_get_offset_for_vaddr {
	uint64_t vaddr;  /* IN */
	uint64_t offset; /* OUT */
	uint32_t count;  /* OUT */
	uint32_t pad;
};
#define GS_IOCTL_GNTDEV_MAP_GRANT_REF GS_IOC_NONE('G', 0, sizeof(struct gs_gntdev_map_grant_ref))
#define GS_IOCTL_GNTDEV_UNMAP_GRANT_REF GS_IOC_NONE('G', 1, sizeof(struct gs_gntdev_unmap_grant_ref))
#define GS_IOCTL_GNTDEV_GET_OFFSET_FOR_VADDR \
	GS_IOC_NONE('G', 2, sizeof(struct gs_gntdev_get_offset_for_vaddr))

_Static_assert(sizeof(struct gs_gntalloc_alloc_gref) == 24, "ioctl_gntalloc_alloc_gref layout");
_Static_assert(sizeof(struct gs_gntalloc_dealloc_gref) == 16, "ioctl_gntalloc_dealloc_gref layout");
_Static_assert(sizeof(struct gs_gntdev_map_grant_ref) == 24, "ioctl_gntdev_map_grant_ref layout");
_Static_assert(sizeof(struct gs_gntdev_unmap_grant_ref) == 16, "ioctl_gntdev_unmap_grant_ref layout");
_Static_assert(sizeof(struct gs_gntdev_get_offset_for_vaddr) == 24, "get_offset_for_vaddr layout");

/* include/uapi/linux/aio_abi.h (little-endian field order): struct iocb and struct io_event. */
struct gs_iocb {
	uint64_t aio_data;
	uint32_t aio_key;
	int32_t aio_rw_flags;
	uint16_t aio_lio_opcode;
	int16_t aio_reqprio;
	uint32_t aio_fildes;
	uint64_t aio_buf;
	uint64_t aio_nbytes;
	int64_t aio_offset;
	uint64_t aio_reserved2;
	uint32_t aio_flags;
	uint32_t aio_resfd;
};
struct gs_io_event {
	uint64_t data;
	uint64_t obj;
	int64_t res;
	int64_t res2;
};
#define GS_IOCB_CMD_PREAD 0
#define GS_IOCB_CMD_PWRITE 1
_Static_assert(sizeof(struct gs_iocb) == 64, "struct iocb layout");
_Static_assert(sizeof(struct gs_io_event) == 32, "struct io_event layout");

/* include/uapi/linux/mempolicy.h */
#define GS_MPOL_MF_MOVE (1 << 1)

/* include/xen/interface/features.h: bit numbers in /sys/hypervisor/properties/features. */
#define GS_XENFEAT_auto_translated_physmap 2
#define GS_XENFEAT_dom0 11

/* include/xen/interface/io/xs_wire.h: xenstore wire protocol (as spoken on /dev/xen/xenbus). */
struct gs_xsd_sockmsg {
	uint32_t type;
	uint32_t req_id;
	uint32_t tx_id;
	uint32_t len;
};
#define GS_XS_READ 2
#define GS_XS_ERROR 16

/* ------------------------------------------------------------------------------------------ */
/* Options and shared state                                                                   */
/* ------------------------------------------------------------------------------------------ */

#define GNTALLOC_PATH "/dev/xen/gntalloc"
#define GNTDEV_PATH "/dev/xen/gntdev"
#define GNTALLOC_LIMIT_PATH "/sys/module/xen_gntalloc/parameters/limit"
#define GNTALLOC_DEFAULT_LIMIT 1024
#define PG 4096UL

#define EXIT_ALL_OK 0
#define EXIT_ANY_FAIL 1
#define EXIT_USAGE 2
#define EXIT_INTERNAL 3

enum backend { BACKEND_XEN, BACKEND_ANON };

static struct {
	long soak_seconds;
	long pages;
	long churn; /* -1: the gntalloc limit */
	long policy_loops;
	long timeout;
	long domid; /* -1: detect */
	const char *domid_source;
	const char *odirect_path;
	int enable_numa_balancing;
	enum backend backend;
	int ptemod; /* 1 PV (gntdev uses ptemod, sets VM_DONTCOPY), 0 auto-translated, -1 unknown */
	char domid_why[256];
} opt = {
	.soak_seconds = 10,
	.pages = 4,
	.churn = -1,
	.policy_loops = 8,
	.timeout = 60,
	.domid = -1,
	.domid_source = "",
	.ptemod = -1,
};

enum status { ST_PASS, ST_FAIL, ST_SKIP };
static const char *const status_name[] = { "PASS", "FAIL", "SKIP" };

#define DETAIL_MAX 768
#define NOTE_MAX 160

/* One page shared between the runner and a subtest child: the child's verdict and progress. */
struct result {
	volatile int done;
	int status;
	int err;
	char detail[DETAIL_MAX];
	volatile unsigned long progress;
	char progress_what[48];
	char note[NOTE_MAX];
};

static struct result *R; /* the current child's result page */

static void vres(int st, int err, const char *fmt, va_list ap)
{
	if (R->done)
		return; /* the first verdict wins */
	R->status = st;
	R->err = err;
	vsnprintf(R->detail, sizeof(R->detail), fmt, ap);
	__sync_synchronize();
	R->done = 1;
}

__attribute__((format(printf, 1, 2))) static void pass(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vres(ST_PASS, 0, fmt, ap);
	va_end(ap);
}

__attribute__((format(printf, 2, 3))) static void pass_e(int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vres(ST_PASS, err, fmt, ap);
	va_end(ap);
}

__attribute__((format(printf, 2, 3))) static void fail(int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vres(ST_FAIL, err, fmt, ap);
	va_end(ap);
}

__attribute__((format(printf, 2, 3))) static void skip(int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vres(ST_SKIP, err, fmt, ap);
	va_end(ap);
}

/* A cleanup step failed: a PASS becomes a FAIL, an earlier FAIL is kept. */
static void teardown_fail(int err, const char *what)
{
	char old[DETAIL_MAX];

	if (R->done && R->status == ST_FAIL)
		return;
	snprintf(old, sizeof(old), "%s", R->done ? R->detail : "no verdict");
	R->status = ST_FAIL;
	R->err = err;
	snprintf(R->detail, sizeof(R->detail), "teardown: %s: %s (verdict before: %.400s)", what,
		 strerror(err), old);
	__sync_synchronize();
	R->done = 1;
}

/* What the child is doing now; shown if it dies or hangs. */
__attribute__((format(printf, 1, 2))) static void note(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(R->note, sizeof(R->note), fmt, ap);
	va_end(ap);
}

static void progress(const char *what, unsigned long n)
{
	if (strcmp(R->progress_what, what) != 0)
		snprintf(R->progress_what, sizeof(R->progress_what), "%s", what);
	R->progress = n;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static const char *signame(int sig)
{
	switch (sig) {
	case SIGHUP: return "SIGHUP";
	case SIGINT: return "SIGINT";
	case SIGQUIT: return "SIGQUIT";
	case SIGILL: return "SIGILL";
	case SIGTRAP: return "SIGTRAP";
	case SIGABRT: return "SIGABRT";
	case SIGBUS: return "SIGBUS";
	case SIGFPE: return "SIGFPE";
	case SIGKILL: return "SIGKILL";
	case SIGSEGV: return "SIGSEGV";
	case SIGPIPE: return "SIGPIPE";
	case SIGALRM: return "SIGALRM";
	case SIGTERM: return "SIGTERM";
	case SIGXCPU: return "SIGXCPU";
	case SIGSYS: return "SIGSYS";
	default: return "signal";
	}
}

/* Read a small text file into buf (NUL-terminated, trailing newline removed); -1 with errno. */
static int read_text(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = read(fd, buf, size - 1);
	close(fd);
	if (n < 0)
		return -1;
	buf[n] = '\0';
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
		buf[--n] = '\0';
	return 0;
}

static int write_text(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = write(fd, text, strlen(text));
	close(fd);
	return n == (ssize_t)strlen(text) ? 0 : -1;
}

/* ------------------------------------------------------------------------------------------ */
/* Data patterns                                                                               */
/* ------------------------------------------------------------------------------------------ */

static uint64_t pat_word(uint64_t seed, size_t i)
{
	uint64_t x = seed * 0x9E3779B97F4A7C15ULL + (uint64_t)i + 1;

	x ^= x >> 31;
	x *= 0xBF58476D1CE4E5B9ULL;
	x ^= x >> 29;
	return x;
}

static void pat_fill(void *p, size_t len, uint64_t seed)
{
	volatile uint64_t *w = p;

	for (size_t i = 0; i < len / 8; i++)
		w[i] = pat_word(seed, i);
}

/* Byte offset of the first mismatch, or -1 when the whole range holds the pattern. */
static long pat_check(const void *p, size_t len, uint64_t seed)
{
	const volatile uint64_t *w = p;

	for (size_t i = 0; i < len / 8; i++)
		if (w[i] != pat_word(seed, i))
			return (long)(i * 8);
	return -1;
}

/* Pattern of a sub-range: words are numbered from the start of the whole buffer. */
static long pat_check_at(const void *p, size_t start, size_t len, uint64_t seed)
{
	const volatile uint64_t *w = (const volatile uint64_t *)((const char *)p + start);

	for (size_t i = 0; i < len / 8; i++)
		if (w[i] != pat_word(seed, start / 8 + i))
			return (long)(start + i * 8);
	return -1;
}

/* ------------------------------------------------------------------------------------------ */
/* The grant mapping: gntalloc (granting side) + gntdev (mapped grant)                         */
/* ------------------------------------------------------------------------------------------ */

struct gmap {
	size_t npages, len;
	int afd, dfd, memfd;
	int allocated; /* gntalloc ALLOC_GREF done, not yet DEALLOC_GREF */
	int granted;   /* gntdev MAP_GRANT_REF done, not yet UNMAP_GRANT_REF */
	uint64_t aindex, dindex;
	uint32_t *refs;
	unsigned char *aview; /* gntalloc mmap: the pages as the granting domain sees them */
	unsigned char *dview; /* gntdev mmap: the grant mapping under test */
	size_t dlen;          /* bytes of dview still mapped */
};

/* Devices present and domid known, or a SKIP verdict and -1. */
static int precheck(void)
{
	if (opt.backend == BACKEND_ANON)
		return 0;
	if (access(GNTALLOC_PATH, F_OK) < 0) {
		skip(errno, "no " GNTALLOC_PATH ": %s (not a Xen domain, or xen-gntalloc not loaded)",
		     strerror(errno));
		return -1;
	}
	if (access(GNTDEV_PATH, F_OK) < 0) {
		skip(errno, "no " GNTDEV_PATH ": %s (not a Xen domain, or xen-gntdev not loaded)",
		     strerror(errno));
		return -1;
	}
	if (opt.domid < 0) {
		skip(ENXIO, "cannot determine own domid (%s); pass --domid", opt.domid_why);
		return -1;
	}
	return 0;
}

static void gmap_init(struct gmap *m, size_t npages)
{
	memset(m, 0, sizeof(*m));
	m->npages = npages;
	m->len = npages * PG;
	m->afd = m->dfd = m->memfd = -1;
}

static int gmap_alloc(struct gmap *m)
{
	struct gs_gntalloc_alloc_gref *a;
	size_t asz = sizeof(*a) + (m->npages - 1) * sizeof(uint32_t);

	if (opt.backend == BACKEND_ANON) {
		note("selftest backend: memfd_create");
		m->memfd = memfd_create("gntstress-selftest", MFD_CLOEXEC);
		if (m->memfd < 0 || ftruncate(m->memfd, (off_t)m->len) < 0) {
			fail(errno, "setup: memfd: %s", strerror(errno));
			return -1;
		}
		m->refs = calloc(m->npages, sizeof(uint32_t));
		m->allocated = 1;
		return 0;
	}
	if (m->afd < 0) {
		m->afd = open(GNTALLOC_PATH, O_RDWR | O_CLOEXEC);
		if (m->afd < 0) {
			skip(errno, "cannot open " GNTALLOC_PATH ": %s", strerror(errno));
			return -1;
		}
	}
	a = calloc(1, asz);
	m->refs = calloc(m->npages, sizeof(uint32_t));
	if (!a || !m->refs) {
		fail(ENOMEM, "setup: out of memory");
		free(a);
		return -1;
	}
	a->domid = (uint16_t)opt.domid;
	a->flags = GS_GNTALLOC_FLAG_WRITABLE;
	a->count = (uint32_t)m->npages;
	note("IOCTL_GNTALLOC_ALLOC_GREF count=%zu", m->npages);
	if (ioctl(m->afd, GS_IOCTL_GNTALLOC_ALLOC_GREF, a) < 0) {
		int e = errno;

		fail(e, "setup: IOCTL_GNTALLOC_ALLOC_GREF(domid=%ld, count=%zu): %s", opt.domid,
		     m->npages, strerror(e));
		free(a);
		return -1;
	}
	m->aindex = a->index;
	memcpy(m->refs, a->gref_ids, m->npages * sizeof(uint32_t));
	free(a);
	m->allocated = 1;
	return 0;
}

static int gmap_map_alloc(struct gmap *m)
{
	void *p;

	note("mmap of the gntalloc pages");
	if (opt.backend == BACKEND_ANON)
		p = mmap(NULL, m->len, PROT_READ | PROT_WRITE, MAP_SHARED, m->memfd, 0);
	else
		p = mmap(NULL, m->len, PROT_READ | PROT_WRITE, MAP_SHARED, m->afd, (off_t)m->aindex);
	if (p == MAP_FAILED) {
		fail(errno, "setup: mmap of the gntalloc pages: %s", strerror(errno));
		return -1;
	}
	m->aview = p;
	return 0;
}

static int gmap_grant(struct gmap *m)
{
	struct gs_gntdev_map_grant_ref *g;
	size_t gsz = sizeof(*g) + (m->npages - 1) * sizeof(struct gs_gntdev_grant_ref);

	if (opt.backend == BACKEND_ANON) {
		m->granted = 1;
		return 0;
	}
	if (m->dfd < 0) {
		m->dfd = open(GNTDEV_PATH, O_RDWR | O_CLOEXEC);
		if (m->dfd < 0) {
			skip(errno, "cannot open " GNTDEV_PATH ": %s", strerror(errno));
			return -1;
		}
	}
	g = calloc(1, gsz);
	if (!g) {
		fail(ENOMEM, "setup: out of memory");
		return -1;
	}
	g->count = (uint32_t)m->npages;
	for (size_t i = 0; i < m->npages; i++) {
		g->refs[i].domid = (uint32_t)opt.domid;
		g->refs[i].ref = m->refs[i];
	}
	note("IOCTL_GNTDEV_MAP_GRANT_REF count=%zu", m->npages);
	if (ioctl(m->dfd, GS_IOCTL_GNTDEV_MAP_GRANT_REF, g) < 0) {
		int e = errno;

		fail(e, "setup: IOCTL_GNTDEV_MAP_GRANT_REF(count=%zu, ref0=%u): %s", m->npages,
		     m->refs[0], strerror(e));
		free(g);
		return -1;
	}
	m->dindex = g->index;
	m->granted = 1;
	free(g);
	return 0;
}

static int gmap_map_dev(struct gmap *m)
{
	void *p;

	note("mmap of the gntdev grant mapping");
	if (opt.backend == BACKEND_ANON)
		p = mmap(NULL, m->len, PROT_READ | PROT_WRITE, MAP_SHARED, m->memfd, 0);
	else
		p = mmap(NULL, m->len, PROT_READ | PROT_WRITE, MAP_SHARED, m->dfd, (off_t)m->dindex);
	if (p == MAP_FAILED) {
		fail(errno, "setup: mmap of the gntdev grant mapping: %s", strerror(errno));
		return -1;
	}
	/* The selftest backend imitates VM_DONTCOPY, which gntdev sets on a PV domain. */
	if (opt.backend == BACKEND_ANON)
		madvise(p, m->len, MADV_DONTFORK);
	m->dview = p;
	m->dlen = m->len;
	return 0;
}

static int gmap_ungrant(struct gmap *m)
{
	struct gs_gntdev_unmap_grant_ref u = { .index = m->dindex, .count = (uint32_t)m->npages };

	m->granted = 0;
	if (opt.backend == BACKEND_ANON)
		return 0;
	note("IOCTL_GNTDEV_UNMAP_GRANT_REF");
	return ioctl(m->dfd, GS_IOCTL_GNTDEV_UNMAP_GRANT_REF, &u);
}

static int gmap_dealloc(struct gmap *m)
{
	struct gs_gntalloc_dealloc_gref d = { .index = m->aindex, .count = (uint32_t)m->npages };

	m->allocated = 0;
	free(m->refs);
	m->refs = NULL;
	if (opt.backend == BACKEND_ANON) {
		close(m->memfd);
		m->memfd = -1;
		return 0;
	}
	note("IOCTL_GNTALLOC_DEALLOC_GREF");
	return ioctl(m->afd, GS_IOCTL_GNTALLOC_DEALLOC_GREF, &d);
}

/* Grant npages of our own and map them through gntdev; on error a verdict is set and -1 returned. */
static int gmap_setup(struct gmap *m, size_t npages)
{
	gmap_init(m, npages);
	if (gmap_alloc(m) < 0 || gmap_map_alloc(m) < 0 || gmap_grant(m) < 0 || gmap_map_dev(m) < 0)
		return -1;
	note("mapping ready");
	return 0;
}

/* Undo whatever is still set up: gntdev side first, so the grant is no longer in use. */
static void gmap_teardown(struct gmap *m)
{
	if (m->dview && m->dlen) {
		if (munmap(m->dview, m->dlen) < 0)
			teardown_fail(errno, "munmap of the gntdev mapping");
	}
	m->dview = NULL;
	m->dlen = 0;
	if (m->granted && gmap_ungrant(m) < 0)
		teardown_fail(errno, "IOCTL_GNTDEV_UNMAP_GRANT_REF");
	if (m->aview && munmap(m->aview, m->len) < 0)
		teardown_fail(errno, "munmap of the gntalloc pages");
	m->aview = NULL;
	if (m->allocated && gmap_dealloc(m) < 0)
		teardown_fail(errno, "IOCTL_GNTALLOC_DEALLOC_GREF");
	if (m->dfd >= 0)
		close(m->dfd);
	if (m->afd >= 0)
		close(m->afd);
	if (m->memfd >= 0)
		close(m->memfd);
	free(m->refs);
	m->refs = NULL;
	m->afd = m->dfd = m->memfd = -1;
}

/* Both views hold the pattern; else a FAIL verdict naming the view and -1. */
static int check_views(struct gmap *m, uint64_t seed, const char *when)
{
	long off = pat_check(m->dview, m->len, seed);

	if (off >= 0) {
		fail(0, "data mismatch %s: gntdev view at offset %ld", when, off);
		return -1;
	}
	off = pat_check(m->aview, m->len, seed);
	if (off >= 0) {
		fail(0, "data mismatch %s: gntalloc view at offset %ld", when, off);
		return -1;
	}
	return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* O_DIRECT backing store: /dev/ram0, or a file on a filesystem that takes O_DIRECT            */
/* ------------------------------------------------------------------------------------------ */

struct backing {
	int fd;
	char desc[128];
	unsigned char *bounce; /* page-aligned ordinary buffer of len bytes */
	size_t len;
};

static int is_mounted_or_swap(const char *dev)
{
	char line[512];
	const char *files[] = { "/proc/mounts", "/proc/swaps" };

	for (size_t i = 0; i < 2; i++) {
		FILE *f = fopen(files[i], "re");
		size_t n = strlen(dev);

		if (!f)
			continue;
		while (fgets(line, sizeof(line), f)) {
			if (strncmp(line, dev, n) == 0 && (line[n] == ' ' || line[n] == '\t')) {
				fclose(f);
				return 1;
			}
		}
		fclose(f);
	}
	return 0;
}

/* An ordinary-memory O_DIRECT round trip, so that a later failure is the mapping's fault. */
static int backing_probe(struct backing *b, char *why, size_t whylen)
{
	ssize_t n;

	pat_fill(b->bounce, b->len, 0x5eed);
	n = pwrite(b->fd, b->bounce, b->len, 0);
	if (n != (ssize_t)b->len) {
		snprintf(why, whylen, "O_DIRECT write probe: %s", n < 0 ? strerror(errno) : "short");
		return -1;
	}
	memset(b->bounce, 0, b->len);
	n = pread(b->fd, b->bounce, b->len, 0);
	if (n != (ssize_t)b->len || pat_check(b->bounce, b->len, 0x5eed) >= 0) {
		snprintf(why, whylen, "O_DIRECT read probe: %s", n < 0 ? strerror(errno) : "bad data");
		return -1;
	}
	return 0;
}

static int backing_try_blockdev(struct backing *b, const char *path, char *why, size_t whylen)
{
	struct stat st;
	off_t size;

	if (stat(path, &st) < 0) {
		snprintf(why, whylen, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (S_ISBLK(st.st_mode) && is_mounted_or_swap(path)) {
		snprintf(why, whylen, "%s is mounted or used as swap", path);
		return -1;
	}
	b->fd = open(path, O_RDWR | O_DIRECT | O_CLOEXEC);
	if (b->fd < 0) {
		snprintf(why, whylen, "%s: open O_DIRECT: %s", path, strerror(errno));
		return -1;
	}
	size = lseek(b->fd, 0, SEEK_END);
	if (S_ISREG(st.st_mode) && size < (off_t)b->len && ftruncate(b->fd, (off_t)b->len) == 0)
		size = (off_t)b->len;
	if (size < (off_t)b->len) {
		snprintf(why, whylen, "%s: only %lld bytes", path, (long long)size);
		close(b->fd);
		return -1;
	}
	if (backing_probe(b, why, whylen) < 0) {
		close(b->fd);
		return -1;
	}
	snprintf(b->desc, sizeof(b->desc), "%s", path);
	return 0;
}

static int backing_try_dir(struct backing *b, const char *dir, char *why, size_t whylen)
{
	char path[PATH_MAX];
	int fl;

	snprintf(path, sizeof(path), "%s/gntstress-odirect-XXXXXX", dir);
	b->fd = mkostemp(path, O_CLOEXEC);
	if (b->fd < 0) {
		snprintf(why, whylen, "%s: %s", dir, strerror(errno));
		return -1;
	}
	unlink(path);
	fl = fcntl(b->fd, F_GETFL);
	if (fcntl(b->fd, F_SETFL, fl | O_DIRECT) < 0) {
		snprintf(why, whylen, "%s: O_DIRECT: %s", dir, strerror(errno));
		close(b->fd);
		return -1;
	}
	if (ftruncate(b->fd, (off_t)b->len) < 0) {
		snprintf(why, whylen, "%s: ftruncate: %s", dir, strerror(errno));
		close(b->fd);
		return -1;
	}
	if (backing_probe(b, why, whylen) < 0) {
		close(b->fd);
		return -1;
	}
	snprintf(b->desc, sizeof(b->desc), "file in %s", dir);
	return 0;
}

/* A backing store for len bytes, or a SKIP verdict and -1. */
static int backing_open(struct backing *b, size_t len)
{
	char reasons[DETAIL_MAX] = "";
	char why[200];
	const char *dirs[] = { getenv("TMPDIR"), "/var/tmp", "/tmp" };
	struct stat st;
	int ok = 0;

	memset(b, 0, sizeof(*b));
	b->fd = -1;
	b->len = len;
	if (posix_memalign((void **)&b->bounce, PG, len) != 0) {
		fail(ENOMEM, "out of memory");
		return -1;
	}
	note("looking for an O_DIRECT backing store");
#define REASON()                                                                   \
	snprintf(reasons + strlen(reasons), sizeof(reasons) - strlen(reasons), "%s%s", \
		 reasons[0] ? "; " : "", why)
	if (opt.odirect_path) {
		if (stat(opt.odirect_path, &st) == 0 && S_ISDIR(st.st_mode))
			ok = backing_try_dir(b, opt.odirect_path, why, sizeof(why)) == 0;
		else
			ok = backing_try_blockdev(b, opt.odirect_path, why, sizeof(why)) == 0;
		if (!ok)
			REASON();
	} else {
		ok = backing_try_blockdev(b, "/dev/ram0", why, sizeof(why)) == 0;
		if (!ok) {
			REASON();
			if (access("/dev/ram0", F_OK) < 0)
				snprintf(reasons + strlen(reasons), sizeof(reasons) - strlen(reasons),
					 " (modprobe brd)");
		}
		for (size_t i = 0; !ok && i < sizeof(dirs) / sizeof(dirs[0]); i++) {
			if (!dirs[i] || !dirs[i][0])
				continue;
			ok = backing_try_dir(b, dirs[i], why, sizeof(why)) == 0;
			if (!ok)
				REASON();
		}
	}
#undef REASON
	if (!ok) {
		free(b->bounce);
		b->bounce = NULL;
		skip(ENODEV, "no O_DIRECT backing store: %s", reasons);
		return -1;
	}
	return 0;
}

static void backing_close(struct backing *b)
{
	if (b->fd >= 0)
		close(b->fd);
	free(b->bounce);
	b->fd = -1;
	b->bounce = NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Helpers for the fork-based subtests                                                         */
/* ------------------------------------------------------------------------------------------ */

/* The first /proc/self/maps line overlapping [a, b), copied to out; 1 if found. */
static int maps_overlap(unsigned long a, unsigned long b, char *out, size_t outlen)
{
	char line[512];
	FILE *f = fopen("/proc/self/maps", "re");
	int found = 0;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		unsigned long s, e;

		if (sscanf(line, "%lx-%lx", &s, &e) == 2 && s < b && e > a) {
			line[strcspn(line, "\n")] = '\0';
			line[outlen - 1 < sizeof(line) - 1 ? outlen - 1 : sizeof(line) - 1] = '\0';
			memcpy(out, line, strlen(line) + 1);
			found = 1;
			break;
		}
	}
	fclose(f);
	return found;
}

/* Lines of /proc/self/maps naming the Xen grant devices (or the selftest memfd). */
static int maps_count_devices(void)
{
	char line[512];
	FILE *f = fopen("/proc/self/maps", "re");
	int n = 0;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (strstr(line, "/dev/xen/gnt") || strstr(line, "gntstress-selftest"))
			n++;
	fclose(f);
	return n;
}

static int read_full(int fd, void *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = read(fd, (char *)buf + got, len - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		got += (size_t)n;
	}
	return 0;
}

static int reap(pid_t pid)
{
	int st;

	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -1;
	return st;
}

static sigjmp_buf touch_jmp;
static volatile sig_atomic_t touch_sig;

static void touch_handler(int sig)
{
	touch_sig = sig;
	siglongjmp(touch_jmp, 1);
}

/* Read one byte at p: 0 if readable, else the signal number it raised. */
static int touch(const volatile unsigned char *p, unsigned char *val)
{
	struct sigaction sa, old_segv, old_bus;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = touch_handler;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGSEGV, &sa, &old_segv);
	sigaction(SIGBUS, &sa, &old_bus);
	touch_sig = 0;
	if (sigsetjmp(touch_jmp, 1) == 0)
		*val = *p;
	sigaction(SIGSEGV, &old_segv, NULL);
	sigaction(SIGBUS, &old_bus, NULL);
	return touch_sig;
}

/* ------------------------------------------------------------------------------------------ */
/* Subtests                                                                                    */
/* ------------------------------------------------------------------------------------------ */

static size_t npages_opt(void)
{
	return (size_t)opt.pages;
}

static void t_self_map(void)
{
	struct gmap m;

	gmap_init(&m, npages_opt());
	if (precheck() < 0 || gmap_setup(&m, npages_opt()) < 0)
		goto out;
	note("gntalloc -> gntdev");
	pat_fill(m.aview, m.len, 101);
	if (pat_check(m.dview, m.len, 101) >= 0) {
		fail(0, "written through gntalloc, not seen through gntdev (offset %ld)",
		     pat_check(m.dview, m.len, 101));
		goto out;
	}
	note("gntdev -> gntalloc");
	pat_fill(m.dview, m.len, 202);
	if (pat_check(m.aview, m.len, 202) >= 0) {
		fail(0, "written through gntdev, not seen through gntalloc (offset %ld)",
		     pat_check(m.aview, m.len, 202));
		goto out;
	}
	if (opt.backend == BACKEND_ANON)
		pass("pages=%zu, both directions OK", m.npages);
	else
		pass("pages=%zu domid=%ld (%s) ref0=%u gntdev index=%#llx: both directions OK",
		     m.npages, opt.domid, opt.domid_source, m.refs[0], (unsigned long long)m.dindex);
out:
	gmap_teardown(&m);
}

static void t_odirect(int write_dir)
{
	struct gmap m;
	struct backing b = { .fd = -1 };
	ssize_t n;

	gmap_init(&m, npages_opt());
	if (precheck() < 0 || backing_open(&b, npages_opt() * PG) < 0 || gmap_setup(&m, npages_opt()) < 0)
		goto out;
	if (!write_dir) {
		pat_fill(b.bounce, b.len, 303);
		if (pwrite(b.fd, b.bounce, b.len, 0) != (ssize_t)b.len) {
			fail(errno, "preparing %s: %s", b.desc, strerror(errno));
			goto out;
		}
		memset(m.dview, 0, m.len);
		note("O_DIRECT pread into the gntdev mapping");
		n = pread(b.fd, m.dview, m.len, 0);
		if (n < 0) {
			fail(errno, "O_DIRECT pread(%s) into the gntdev mapping: %s", b.desc,
			     strerror(errno));
			goto out;
		}
		if (n != (ssize_t)m.len) {
			fail(0, "O_DIRECT pread(%s) short: %zd of %zu bytes", b.desc, n, m.len);
			goto out;
		}
		if (check_views(&m, 303, "after O_DIRECT read") < 0)
			goto out;
		pass("O_DIRECT read of %zu bytes from %s into the gntdev mapping, data verified",
		     m.len, b.desc);
	} else {
		pat_fill(m.dview, m.len, 404);
		note("O_DIRECT pwrite from the gntdev mapping");
		n = pwrite(b.fd, m.dview, m.len, 0);
		if (n < 0) {
			fail(errno, "O_DIRECT pwrite(%s) from the gntdev mapping: %s", b.desc,
			     strerror(errno));
			goto out;
		}
		if (n != (ssize_t)m.len) {
			fail(0, "O_DIRECT pwrite(%s) short: %zd of %zu bytes", b.desc, n, m.len);
			goto out;
		}
		memset(b.bounce, 0, b.len);
		if (pread(b.fd, b.bounce, b.len, 0) != (ssize_t)b.len) {
			fail(errno, "reading back %s: %s", b.desc, strerror(errno));
			goto out;
		}
		if (pat_check(b.bounce, b.len, 404) >= 0) {
			fail(0, "data written from the gntdev mapping differs on %s at offset %ld",
			     b.desc, pat_check(b.bounce, b.len, 404));
			goto out;
		}
		pass("O_DIRECT write of %zu bytes from the gntdev mapping to %s, data verified",
		     m.len, b.desc);
	}
out:
	gmap_teardown(&m);
	backing_close(&b);
}

static void t_odirect_read(void)
{
	t_odirect(0);
}

static void t_odirect_write(void)
{
	t_odirect(1);
}

/* One AIO request through raw syscalls; returns the event's res (bytes or -errno). */
static long aio_one(unsigned long ctx, int fd, int op, void *buf, size_t len, const char **stage)
{
	struct gs_iocb cb;
	struct gs_iocb *cbs[1] = { &cb };
	struct gs_io_event ev;
	struct timespec ts = { .tv_sec = 20 };
	long rc;

	memset(&cb, 0, sizeof(cb));
	cb.aio_data = 0x6e7473;
	cb.aio_lio_opcode = (uint16_t)op;
	cb.aio_fildes = (uint32_t)fd;
	cb.aio_buf = (uint64_t)(uintptr_t)buf;
	cb.aio_nbytes = len;
	cb.aio_offset = 0;
	*stage = "io_submit";
	rc = syscall(SYS_io_submit, ctx, 1L, cbs);
	if (rc < 0)
		return -errno;
	if (rc != 1)
		return -EAGAIN;
	*stage = "io_getevents";
	rc = syscall(SYS_io_getevents, ctx, 1L, 1L, &ev, &ts);
	if (rc < 0)
		return -errno;
	if (rc == 0)
		return -ETIMEDOUT;
	*stage = "completion";
	return (long)ev.res;
}

static void t_io_submit(void)
{
	struct gmap m;
	struct backing b = { .fd = -1 };
	unsigned long ctx = 0;
	const char *stage = "";
	long res;

	gmap_init(&m, npages_opt());
	if (precheck() < 0 || backing_open(&b, npages_opt() * PG) < 0 || gmap_setup(&m, npages_opt()) < 0)
		goto out;
	if (syscall(SYS_io_setup, 4L, &ctx) < 0) {
		if (errno == ENOSYS)
			skip(errno, "io_setup: kernel built without AIO");
		else
			fail(errno, "io_setup: %s", strerror(errno));
		ctx = 0;
		goto out;
	}
	pat_fill(b.bounce, b.len, 505);
	if (pwrite(b.fd, b.bounce, b.len, 0) != (ssize_t)b.len) {
		fail(errno, "preparing %s: %s", b.desc, strerror(errno));
		goto out;
	}
	memset(m.dview, 0, m.len);
	note("io_submit IOCB_CMD_PREAD into the gntdev mapping");
	res = aio_one(ctx, b.fd, GS_IOCB_CMD_PREAD, m.dview, m.len, &stage);
	if (res < 0) {
		fail((int)-res, "IOCB_CMD_PREAD (O_DIRECT, %s) into the gntdev mapping: %s: %s", b.desc,
		     stage, strerror((int)-res));
		goto out;
	}
	if (res != (long)m.len) {
		fail(0, "IOCB_CMD_PREAD short: %ld of %zu bytes", res, m.len);
		goto out;
	}
	if (check_views(&m, 505, "after IOCB_CMD_PREAD") < 0)
		goto out;
	pat_fill(m.dview, m.len, 606);
	note("io_submit IOCB_CMD_PWRITE from the gntdev mapping");
	res = aio_one(ctx, b.fd, GS_IOCB_CMD_PWRITE, m.dview, m.len, &stage);
	if (res < 0) {
		fail((int)-res, "IOCB_CMD_PWRITE (O_DIRECT, %s) from the gntdev mapping: %s: %s",
		     b.desc, stage, strerror((int)-res));
		goto out;
	}
	if (res != (long)m.len) {
		fail(0, "IOCB_CMD_PWRITE short: %ld of %zu bytes", res, m.len);
		goto out;
	}
	memset(b.bounce, 0, b.len);
	if (pread(b.fd, b.bounce, b.len, 0) != (ssize_t)b.len || pat_check(b.bounce, b.len, 606) >= 0) {
		fail(0, "data written by IOCB_CMD_PWRITE differs on %s", b.desc);
		goto out;
	}
	pass("io_submit PREAD and PWRITE of %zu bytes each (O_DIRECT, %s), data verified", m.len,
	     b.desc);
out:
	if (ctx)
		syscall(SYS_io_destroy, ctx);
	gmap_teardown(&m);
	backing_close(&b);
}

static void t_vmsplice(void)
{
	struct gmap m;
	int p[2] = { -1, -1 };
	unsigned char *buf = NULL;
	size_t done = 0, chunk;
	long psize;

	gmap_init(&m, npages_opt());
	if (precheck() < 0 || gmap_setup(&m, npages_opt()) < 0)
		goto out;
	if (pipe2(p, O_CLOEXEC) < 0) {
		fail(errno, "pipe2: %s", strerror(errno));
		goto out;
	}
	fcntl(p[1], F_SETPIPE_SZ, (int)m.len);
	psize = fcntl(p[1], F_GETPIPE_SZ);
	chunk = psize > 0 ? (size_t)psize : PG;
	if (chunk > m.len)
		chunk = m.len;
	buf = malloc(m.len);
	if (!buf) {
		fail(ENOMEM, "out of memory");
		goto out;
	}
	pat_fill(m.dview, m.len, 707);
	while (done < m.len) {
		size_t want = m.len - done < chunk ? m.len - done : chunk;
		struct iovec iov = { .iov_base = m.dview + done, .iov_len = want };
		ssize_t n;

		note("vmsplice of the gntdev mapping at offset %zu", done);
		n = vmsplice(p[1], &iov, 1, SPLICE_F_NONBLOCK);
		if (n < 0) {
			fail(errno, "vmsplice of the gntdev mapping into a pipe (offset %zu): %s", done,
			     strerror(errno));
			goto out;
		}
		if (n == 0 || read_full(p[0], buf + done, (size_t)n) < 0) {
			fail(errno, "reading the pipe after vmsplice failed");
			goto out;
		}
		done += (size_t)n;
	}
	if (pat_check(buf, m.len, 707) >= 0) {
		fail(0, "data read from the pipe differs at offset %ld", pat_check(buf, m.len, 707));
		goto out;
	}
	pass("vmsplice of %zu bytes of the gntdev mapping into a pipe (chunk %zu), data verified",
	     m.len, chunk);
out:
	if (p[0] >= 0)
		close(p[0]);
	if (p[1] >= 0)
		close(p[1]);
	free(buf);
	gmap_teardown(&m);
}

struct pvm_report {
	int read_err;  /* 0 or errno of process_vm_readv */
	long read_n;
	long mismatch; /* -1 or offset */
	int write_err;
	long write_n;
};

static void t_process_vm_readv(void)
{
	struct gmap m;
	int p[2] = { -1, -1 };
	struct pvm_report rep;
	unsigned char *buf = NULL;
	pid_t pid;
	const char *who = "child read the parent's";

	gmap_init(&m, npages_opt());
	if (precheck() < 0 || gmap_setup(&m, npages_opt()) < 0)
		goto out;
	buf = malloc(m.len);
	if (!buf || pipe2(p, O_CLOEXEC) < 0) {
		fail(errno, "setup: %s", strerror(errno));
		goto out;
	}
	pat_fill(m.dview, m.len, 808);
	fflush(NULL);
	note("forking a reader for process_vm_readv");
	pid = fork();
	if (pid < 0) {
		fail(errno, "fork: %s", strerror(errno));
		goto out;
	}
	if (pid == 0) {
		struct iovec local = { .iov_base = buf, .iov_len = m.len };
		struct iovec remote = { .iov_base = m.dview, .iov_len = m.len };
		pid_t parent = getppid();
		ssize_t n;

		memset(&rep, 0, sizeof(rep));
		rep.mismatch = -1;
		n = process_vm_readv(parent, &local, 1, &remote, 1, 0);
		rep.read_n = n;
		rep.read_err = n < 0 ? errno : 0;
		if (n == (ssize_t)m.len)
			rep.mismatch = pat_check(buf, m.len, 808);
		pat_fill(buf, m.len, 809);
		n = process_vm_writev(parent, &local, 1, &remote, 1, 0);
		rep.write_n = n;
		rep.write_err = n < 0 ? errno : 0;
		if (write(p[1], &rep, sizeof(rep)) != (ssize_t)sizeof(rep))
			_exit(1);
		_exit(0);
	}
	close(p[1]);
	p[1] = -1;
	note("waiting for the process_vm_readv child");
	if (read_full(p[0], &rep, sizeof(rep)) < 0) {
		fail(0, "process_vm_readv child died without a report (status %#x)", reap(pid));
		goto out;
	}
	reap(pid);
	if (rep.read_err == EPERM) {
		/* No ptrace access to the parent here: read our own mapping instead. */
		struct iovec local = { .iov_base = buf, .iov_len = m.len };
		struct iovec remote = { .iov_base = m.dview, .iov_len = m.len };
		ssize_t n = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);

		who = "self-read (child had EPERM) of the";
		rep.read_n = n;
		rep.read_err = n < 0 ? errno : 0;
		rep.mismatch = n == (ssize_t)m.len ? pat_check(buf, m.len, 808) : -1;
		pat_fill(buf, m.len, 809);
		n = process_vm_writev(getpid(), &local, 1, &remote, 1, 0);
		rep.write_n = n;
		rep.write_err = n < 0 ? errno : 0;
	}
	if (rep.read_err) {
		fail(rep.read_err, "process_vm_readv (%s gntdev mapping): %s", who,
		     strerror(rep.read_err));
		goto out;
	}
	if (rep.read_n != (long)m.len || rep.mismatch >= 0) {
		fail(0, "process_vm_readv (%s gntdev mapping): %ld of %zu bytes, mismatch at %ld",
		     who, rep.read_n, m.len, rep.mismatch);
		goto out;
	}
	if (rep.write_err) {
		fail(rep.write_err, "process_vm_writev into the gntdev mapping: %s",
		     strerror(rep.write_err));
		goto out;
	}
	if (rep.write_n != (long)m.len) {
		fail(0, "process_vm_writev short: %ld of %zu bytes", rep.write_n, m.len);
		goto out;
	}
	if (check_views(&m, 809, "after process_vm_writev") < 0)
		goto out;
	pass("process_vm_readv (%s gntdev mapping) and process_vm_writev of %zu bytes, data verified",
	     who, m.len);
out:
	if (p[0] >= 0)
		close(p[0]);
	if (p[1] >= 0)
		close(p[1]);
	free(buf);
	gmap_teardown(&m);
}

static void t_proc_pid_mem(void)
{
	struct gmap m;
	unsigned char *buf = NULL;
	int fd = -1;
	ssize_t n;
	off_t addr;

	gmap_init(&m, npages_opt());
	if (precheck() < 0 || gmap_setup(&m, npages_opt()) < 0)
		goto out;
	buf = malloc(m.len);
	fd = open("/proc/self/mem", O_RDWR | O_CLOEXEC);
	if (!buf || fd < 0) {
		skip(errno, "cannot open /proc/self/mem: %s", strerror(errno));
		goto out;
	}
	addr = (off_t)(uintptr_t)m.dview;
	pat_fill(m.dview, m.len, 909);
	note("pread /proc/self/mem at the gntdev mapping");
	n = pread(fd, buf, m.len, addr);
	if (n < 0) {
		fail(errno, "pread(/proc/self/mem) at the gntdev mapping %#llx: %s",
		     (unsigned long long)addr, strerror(errno));
		goto out;
	}
	if (n != (ssize_t)m.len || pat_check(buf, m.len, 909) >= 0) {
		fail(0, "pread(/proc/self/mem): %zd of %zu bytes, data mismatch", n, m.len);
		goto out;
	}
	pat_fill(buf, m.len, 910);
	note("pwrite /proc/self/mem at the gntdev mapping");
	n = pwrite(fd, buf, m.len, addr);
	if (n < 0) {
		fail(errno, "pwrite(/proc/self/mem) at the gntdev mapping: %s", strerror(errno));
		goto out;
	}
	if (n != (ssize_t)m.len) {
		fail(0, "pwrite(/proc/self/mem) short: %zd of %zu bytes", n, m.len);
		goto out;
	}
	if (check_views(&m, 910, "after pwrite(/proc/self/mem)") < 0)
		goto out;
	pass("/proc/self/mem pread and pwrite of %zu bytes at the gntdev mapping, data verified",
	     m.len);
out:
	if (fd >= 0)
		close(fd);
	free(buf);
	gmap_teardown(&m);
}

/* Online NUMA nodes from /sys/devices/system/node/online ("0-1,3"); returns how many. */
static int online_nodes(int *nodes, int max)
{
	char text[256], *s;
	int n = 0;

	if (read_text("/sys/devices/system/node/online", text, sizeof(text)) < 0)
		return 0;
	s = text;
	while (*s && n < max) {
		char *end;
		long a = strtol(s, &end, 10), b = a;

		if (end == s)
			break;
		s = end;
		if (*s == '-')
			b = strtol(s + 1, &s, 10);
		for (long i = a; i <= b && n < max; i++)
			nodes[n++] = (int)i;
		if (*s == ',')
			s++;
	}
	return n;
}

static void fmt_status(char *out, size_t outlen, const int *st, size_t n)
{
	size_t used = 0;

	out[0] = '\0';
	for (size_t i = 0; i < n && used + 16 < outlen; i++)
		used += (size_t)snprintf(out + used, outlen - used, "%s%d", i ? "," : "", st[i]);
	if (used + 16 >= outlen)
		snprintf(out + used, outlen - used, ",...");
}

static void t_move_pages(void)
{
	struct gmap m;
	void **pages = NULL;
	int *status = NULL, *target = NULL;
	int nodes[64];
	int nn, cur, dst = -1, efault = 0;
	char before[192], after[192];
	long rc;

	gmap_init(&m, npages_opt());
	if (precheck() < 0 || gmap_setup(&m, npages_opt()) < 0)
		goto out;
	pages = calloc(m.npages, sizeof(*pages));
	status = calloc(m.npages, sizeof(*status));
	target = calloc(m.npages, sizeof(*target));
	if (!pages || !status || !target) {
		fail(ENOMEM, "out of memory");
		goto out;
	}
	pat_fill(m.dview, m.len, 1111);
	for (size_t i = 0; i < m.npages; i++)
		pages[i] = m.dview + i * PG;
	note("move_pages query");
	rc = syscall(SYS_move_pages, 0, (unsigned long)m.npages, pages, NULL, status, 0);
	if (rc < 0) {
		if (errno == ENOSYS)
			skip(errno, "move_pages: kernel built without NUMA migration");
		else
			fail(errno, "move_pages query: %s", strerror(errno));
		goto out;
	}
	fmt_status(before, sizeof(before), status, m.npages);
	nn = online_nodes(nodes, 64);
	cur = status[0] >= 0 ? status[0] : (nn > 0 ? nodes[0] : 0);
	for (int i = 0; i < nn; i++)
		if (nodes[i] != cur) {
			dst = nodes[i];
			break;
		}
	if (dst < 0)
		dst = cur; /* single node: a move to the same node still looks the pages up */
	for (size_t i = 0; i < m.npages; i++)
		target[i] = dst;
	note("move_pages to node %d", dst);
	rc = syscall(SYS_move_pages, 0, (unsigned long)m.npages, pages, target, status,
		     GS_MPOL_MF_MOVE);
	if (rc < 0) {
		int e = errno;

		if (e == ENODEV || e == EPERM || e == EACCES || e == EINVAL)
			skip(e, "move_pages to node %d refused: %s (status before: [%s])", dst,
			     strerror(e), before);
		else
			fail(e, "move_pages to node %d: %s (status before: [%s])", dst, strerror(e),
			     before);
		goto out;
	}
	fmt_status(after, sizeof(after), status, m.npages);
	for (size_t i = 0; i < m.npages; i++)
		if (status[i] == -EFAULT)
			efault++;
	if (efault) {
		fail(EFAULT, "move_pages to node %d: %d of %zu pages EFAULT (not migratable VMA), "
			     "status=[%s] before=[%s] nodes=%d",
		     dst, efault, m.npages, after, before, nn);
		goto out;
	}
	if (check_views(&m, 1111, "after move_pages") < 0)
		goto out;
	pass("move_pages to node %d%s: rc=%ld status=[%s] before=[%s] nodes=%d, data intact", dst,
	     dst == cur ? " (same node)" : "", rc, after, before, nn);
out:
	free(pages);
	free(status);
	free(target);
	gmap_teardown(&m);
}

static int vmstat_get(const char *key, unsigned long long *val)
{
	char line[256];
	size_t n = strlen(key);
	FILE *f = fopen("/proc/vmstat", "re");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, key, n) == 0 && line[n] == ' ') {
			*val = strtoull(line + n + 1, NULL, 10);
			fclose(f);
			return 0;
		}
	}
	fclose(f);
	return -1;
}

static void fmt_delta(char *out, size_t len, const char *key, unsigned long long before, int ok)
{
	unsigned long long after;

	if (ok && vmstat_get(key, &after) == 0)
		snprintf(out, len, "%s=+%llu", key, after - before);
	else
		snprintf(out, len, "%s=n/a", key);
}

/* The NUMA balancing sysctl is on, or a SKIP verdict and -1; its value in nb. */
static int numa_balancing_on(char *nb, size_t len)
{
	if (read_text("/proc/sys/kernel/numa_balancing", nb, len) < 0) {
		skip(errno, "no /proc/sys/kernel/numa_balancing: kernel without NUMA balancing");
		return -1;
	}
	if (strcmp(nb, "0") == 0) {
		skip(0, "kernel.numa_balancing=0 (boot with numa_balancing=enable or pass "
			"--enable-numa-balancing)");
		return -1;
	}
	return 0;
}

/*
 * Write and verify through the gntdev mapping for --soak-seconds with NUMA balancing on; a
 * FAIL verdict and -1 on a mismatch (a SIGBUS kills the child). On success, what it did in out.
 */
static int soak(struct gmap *m, const char *nb, int nn, char *out, size_t outlen)
{
	char d1[64], d2[64];
	unsigned long long pte0 = 0, hint0 = 0;
	int ok_pte = vmstat_get("numa_pte_updates", &pte0) == 0;
	int ok_hint = vmstat_get("numa_hint_faults", &hint0) == 0;
	unsigned long it = 0;
	double t0 = now_s(), end = t0 + (double)opt.soak_seconds;

	note("soak: writing and verifying through the gntdev mapping");
	do {
		uint64_t seed = 0x50a0000ULL + it;
		long off;

		pat_fill(m->dview, m->len, seed);
		off = pat_check(m->dview, m->len, seed);
		if (off < 0)
			off = pat_check(m->aview, m->len, seed);
		if (off >= 0) {
			fail(0, "data mismatch at iteration %lu offset %ld after %.2fs (nodes=%d)", it,
			     off, now_s() - t0, nn);
			return -1;
		}
		progress("soak iterations", ++it);
	} while (now_s() < end);
	fmt_delta(d1, sizeof(d1), "numa_pte_updates", pte0, ok_pte);
	fmt_delta(d2, sizeof(d2), "numa_hint_faults", hint0, ok_hint);
	snprintf(out, outlen,
		 "soak %.1fs with kernel.numa_balancing=%s nodes=%d pages=%zu: iterations=%lu, %s %s",
		 now_s() - t0, nb, nn, m->npages, it, d1, d2);
	return 0;
}

static void t_numa_soak(void)
{
	struct gmap m;
	char nb[32], done[256];
	int nodes[64], nn;

	gmap_init(&m, npages_opt());
	if (precheck() < 0 || numa_balancing_on(nb, sizeof(nb)) < 0)
		return;
	nn = online_nodes(nodes, 64);
	if (gmap_setup(&m, npages_opt()) == 0 && soak(&m, nb, nn, done, sizeof(done)) == 0)
		pass("%s", done);
	gmap_teardown(&m);
}

/* ------------------------------------------------------------------------------------------ */
/* Memory policies on the grant mapping (mbind, get_mempolicy): the review's concern           */
/* ------------------------------------------------------------------------------------------ */

/* include/uapi/linux/mempolicy.h */
#define GS_MPOL_PREFERRED 1
#define GS_MPOL_BIND 2
#define GS_MPOL_F_NUMA_BALANCING (1 << 13)
#define GS_MPOL_MODE_FLAGS ((1 << 15) | (1 << 14) | (1 << 13))
#define GS_MPOL_F_ADDR (1 << 1)
#define GS_MAXNODE 65 /* one unsigned long of node bits; the kernel counts maxnode - 1 bits */

/* mbind [p, p+len) with mode (flags included) to the online nodes (preferred: the first). */
static long mbind_nodes(void *p, size_t len, int mode)
{
	int nodes[64], nn = online_nodes(nodes, 64);
	unsigned long mask = 0;

	for (int i = 0; i < nn; i++)
		if ((mode & ~GS_MPOL_MODE_FLAGS) == GS_MPOL_BIND || i == 0)
			mask |= 1UL << (nodes[i] & 63);
	if (!mask)
		mask = 1;
	return syscall(SYS_mbind, p, len, (unsigned long)mode, &mask, (unsigned long)GS_MAXNODE, 0U);
}

/* The policy mode (with its mode flags) the kernel reports at p, or -1 with errno. */
static int policy_at(const void *p)
{
	int mode = -1;
	unsigned long mask[1];

	if (syscall(SYS_get_mempolicy, &mode, mask, (unsigned long)GS_MAXNODE, p, GS_MPOL_F_ADDR) < 0)
		return -1;
	return mode;
}

/* mbind failed: SKIP when the kernel cannot do it at all, FAIL otherwise. */
static void mbind_refused(int e, const char *what)
{
	if (e == ENOSYS)
		skip(e, "%s: kernel built without NUMA (mbind ENOSYS)", what);
	else if (e == EINVAL && strstr(what, "NUMA_BALANCING"))
		skip(e, "%s: EINVAL (kernel before 5.15 has no MPOL_F_NUMA_BALANCING)", what);
	else
		fail(e, "%s: %s", what, strerror(e));
}

/*
 * mbind-soak: the grant mapping mbind()ed with MPOL_BIND | MPOL_F_NUMA_BALANCING, then the NUMA
 * soak. 6.1 stores that as the VMA's policy with MPOL_F_MOF; vma_policy_mof() asks a ->get_policy
 * op when there is one, so a variant whose op hands the VMA policy back opts the grant map into
 * NUMA balancing again. VM_MIXEDMAP and VM_IO keep the scanner away whatever the policy says.
 */
static void t_mbind_soak(void)
{
	struct gmap m;
	char nb[32], done[256];
	int nodes[64], nn, mode;

	gmap_init(&m, npages_opt());
	if (precheck() < 0 || numa_balancing_on(nb, sizeof(nb)) < 0)
		return;
	nn = online_nodes(nodes, 64);
	if (gmap_setup(&m, npages_opt()) < 0)
		goto out;
	note("mbind(MPOL_BIND | MPOL_F_NUMA_BALANCING) of the gntdev mapping");
	if (mbind_nodes(m.dview, m.len, GS_MPOL_BIND | GS_MPOL_F_NUMA_BALANCING) < 0) {
		mbind_refused(errno, "mbind(MPOL_BIND | MPOL_F_NUMA_BALANCING)");
		goto out;
	}
	mode = policy_at(m.dview);
	if (mode != (GS_MPOL_BIND | GS_MPOL_F_NUMA_BALANCING)) {
		fail(mode < 0 ? errno : 0, "get_mempolicy after mbind: mode %#x, expected %#x%s%s",
		     mode, GS_MPOL_BIND | GS_MPOL_F_NUMA_BALANCING, mode < 0 ? ": " : "",
		     mode < 0 ? strerror(errno) : "");
		goto out;
	}
	if (soak(&m, nb, nn, done, sizeof(done)) == 0)
		pass("policy BIND|NUMA_BALANCING on the grant map; %s", done);
out:
	gmap_teardown(&m);
}

struct fork_report {
	int maps;     /* 1 overlap, 0 none, -1 unreadable */
	int touch_sig;
	long mismatch;
	char line[200];
};

/* Fork a child that looks for the mapping (seed: its pattern) and reports; else FAIL and -1. */
static int fork_look(const struct gmap *m, uint64_t seed, struct fork_report *rep)
{
	int p[2];
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) < 0) {
		fail(errno, "pipe2: %s", strerror(errno));
		return -1;
	}
	fflush(NULL);
	note("forking a child to look for the mapping");
	pid = fork();
	if (pid < 0) {
		int e = errno;

		close(p[0]);
		close(p[1]);
		fail(e, "fork: %s", strerror(e));
		return -1;
	}
	if (pid == 0) {
		unsigned char v = 0;
		unsigned long a = (unsigned long)(uintptr_t)m->dview;

		memset(rep, 0, sizeof(*rep));
		rep->mismatch = -1;
		rep->maps = maps_overlap(a, a + m->len, rep->line, sizeof(rep->line));
		rep->touch_sig = touch(m->dview, &v);
		if (!rep->touch_sig)
			rep->mismatch = pat_check(m->dview, m->len, seed);
		_exit(write(p[1], rep, sizeof(*rep)) == (ssize_t)sizeof(*rep) ? 0 : 1);
	}
	close(p[1]);
	if (read_full(p[0], rep, sizeof(*rep)) < 0) {
		close(p[0]);
		fail(0, "fork child died without a report (status %#x)", reap(pid));
		return -1;
	}
	close(p[0]);
	reap(pid);
	return 0;
}

static void t_fork(void)
{
	struct gmap m;
	struct fork_report rep;
	int expect_copy = opt.backend == BACKEND_XEN && opt.ptemod == 0;

	gmap_init(&m, npages_opt());
	if (precheck() < 0 || gmap_setup(&m, npages_opt()) < 0)
		goto out;
	pat_fill(m.dview, m.len, 1212);
	if (fork_look(&m, 1212, &rep) < 0)
		goto out;
	if (check_views(&m, 1212, "in the parent after the child exited") < 0)
		goto out;
	if (rep.maps < 0) {
		fail(0, "child could not read /proc/self/maps");
		goto out;
	}
	if (expect_copy) {
		if (rep.maps == 1 && !rep.touch_sig && rep.mismatch < 0)
			pass("auto-translated domain (no VM_DONTCOPY): child inherited the mapping and "
			     "sees the data");
		else
			fail(0, "auto-translated domain: child maps=%d touch signal=%d mismatch=%ld",
			     rep.maps, rep.touch_sig, rep.mismatch);
		goto out;
	}
	if (rep.maps == 1) {
		fail(0, "child inherited the gntdev mapping (VM_DONTCOPY missing)%s: %s",
		     opt.ptemod < 0 ? " [paging mode unknown]" : "", rep.line);
		goto out;
	}
	if (rep.touch_sig == 0) {
		fail(0, "range absent from the child's /proc/self/maps but touching it did not fault");
		goto out;
	}
	pass("child has no mapping (VM_DONTCOPY): range absent from /proc/self/maps, touch -> %s; "
	     "parent mapping intact",
	     signame(rep.touch_sig));
out:
	gmap_teardown(&m);
}

/* ------------------------------------------------------------------------------------------ */
/* policy-lifecycle: VMA policies on the grant mapping split, duplicated, moved and freed      */
/* ------------------------------------------------------------------------------------------ */

#define LC_PAGES 8
#define SLAB_DIR "/sys/kernel/slab/numa_policy"

/* In-use numa_policy objects (per-CPU slabs flushed first where the kernel allows), or -1. */
static long policy_objects(char *src, size_t srclen)
{
	char text[256], line[512];
	FILE *f;

	write_text(SLAB_DIR "/shrink", "1");
	if (read_text(SLAB_DIR "/objects", text, sizeof(text)) == 0) {
		char target[PATH_MAX];
		ssize_t n = readlink(SLAB_DIR, target, sizeof(target) - 1);

		target[n > 0 ? n : 0] = '\0';
		snprintf(src, srclen, SLAB_DIR "/objects%s%s%s", n > 0 ? " (merged cache " : "",
			 n > 0 ? target : "", n > 0 ? ")" : "");
		return atol(text);
	}
	f = fopen("/proc/slabinfo", "re");
	while (f && fgets(line, sizeof(line), f)) {
		long active;

		if (sscanf(line, "numa_policy %ld", &active) == 1) {
			fclose(f);
			snprintf(src, srclen, "/proc/slabinfo active_objs");
			return active;
		}
	}
	if (f)
		fclose(f);
	snprintf(src, srclen, "no " SLAB_DIR "/objects (SLUB_DEBUG off) and no numa_policy line in "
			      "/proc/slabinfo");
	return -1;
}

/* Page pg of the mapping at base reads back the pattern (0), reads wrong (-1), or faults (signal). */
static int page_state(const unsigned char *base, size_t pg, uint64_t seed)
{
	unsigned char v;
	int sig = touch(base + pg * PG, &v);

	if (sig)
		return sig;
	return pat_check_at(base, pg * PG, PG, seed) >= 0 ? -1 : 0;
}

/* Pages the kernel may have unmapped (PV: gntdev's MMU notifier ran over their range). */
struct lc_state {
	uint64_t seed;
	unsigned char *dv;
	int lost_mprotect, lost_mremap; /* pages found unreadable after the step */
};

/* Pages in list must still hold the pattern through the gntdev mapping; else FAIL and -1. */
static int lc_intact(struct lc_state *st, const int *pages, int n, const char *after)
{
	for (int i = 0; i < n; i++) {
		int r = page_state(st->dv, (size_t)pages[i], st->seed);

		if (r != 0) {
			fail(0, "after %s: page %d of the gntdev mapping %s%s", after, pages[i],
			     r < 0 ? "holds wrong data" : "faults with ", r < 0 ? "" : signame(r));
			return -1;
		}
	}
	return 0;
}

/* The policy at page pg is mode; else FAIL and -1. */
static int lc_policy(const unsigned char *at, int mode, const char *after)
{
	int got = policy_at(at);

	if (got == mode)
		return 0;
	fail(got < 0 ? errno : 0, "after %s: get_mempolicy(MPOL_F_ADDR) says mode %d, expected %d",
	     after, got, mode);
	return -1;
}

/* A page the kernel may have unmapped: the pattern, or a fault (counted); wrong data is FAIL. */
static int lc_maybe_lost(struct lc_state *st, const unsigned char *base, size_t pg, int *lost,
			 const char *after)
{
	int r = page_state(base, pg, st->seed);

	if (r < 0) {
		fail(0, "after %s: the page holds wrong data", after);
		return -1;
	}
	if (r > 0)
		(*lost)++;
	return 0;
}

/* fork with split policies on the mapping: the child reports, the parent checks its own view. */
static int lc_fork(struct gmap *m, struct lc_state *st)
{
	int expect_copy = opt.backend == BACKEND_XEN && opt.ptemod == 0;
	struct fork_report rep;

	if (fork_look(m, st->seed, &rep) < 0)
		return -1;
	if (expect_copy ? rep.maps != 1 || rep.mismatch >= 0 : rep.maps != 0 || !rep.touch_sig) {
		fail(0, "fork with split policies: child maps=%d touch signal=%d mismatch=%ld "
			"(expected %s)",
		     rep.maps, rep.touch_sig, rep.mismatch,
		     expect_copy ? "the mapping with the data" : "no mapping (VM_DONTCOPY)");
		return -1;
	}
	return 0;
}

/*
 * One round: mbind a sub-range (split, policy), mbind a wider one (more splits, policies
 * replaced), fork, mprotect a middle page (a policy VMA split in three: mpol_dup), partial
 * munmap (policies freed), mremap a policy VMA elsewhere (copy_vma: vma_dup_policy) and shrink
 * it, then unmap everything. On a PV domain gntdev's MMU notifier unmaps the grants under an
 * mprotect or a move, so those pages may fault afterwards; they must never read wrong data.
 */
static int lc_round(struct lc_state *st, unsigned long round)
{
	static const int all[] = { 0, 1, 2, 3, 4, 5, 6, 7 }, rest[] = { 0, 1, 6 };
	struct gmap m;
	unsigned char *res = MAP_FAILED, *moved;
	int rc = -1;

	st->seed = 0x11fe0000ULL + round;
	if (gmap_setup(&m, LC_PAGES) < 0)
		goto out;
	st->dv = m.dview;
	pat_fill(m.dview, m.len, st->seed);
	note("round %lu: mbind pages 2-5 MPOL_BIND", round);
	if (mbind_nodes(m.dview + 2 * PG, 4 * PG, GS_MPOL_BIND) < 0) {
		mbind_refused(errno, "mbind(MPOL_BIND) of pages 2-5");
		goto out;
	}
	if (lc_policy(m.dview + 3 * PG, GS_MPOL_BIND, "mbind of pages 2-5") < 0 ||
	    lc_policy(m.dview, 0, "mbind of pages 2-5 (page 0)") < 0 ||
	    lc_intact(st, all, LC_PAGES, "mbind of pages 2-5") < 0)
		goto out;
	note("round %lu: mbind pages 1-6 MPOL_PREFERRED", round);
	if (mbind_nodes(m.dview + PG, 6 * PG, GS_MPOL_PREFERRED) < 0) {
		mbind_refused(errno, "mbind(MPOL_PREFERRED) of pages 1-6");
		goto out;
	}
	if (lc_policy(m.dview + 3 * PG, GS_MPOL_PREFERRED, "mbind of pages 1-6") < 0 ||
	    lc_intact(st, all, LC_PAGES, "mbind of pages 1-6") < 0)
		goto out;
	note("round %lu: fork", round);
	if (lc_fork(&m, st) < 0 || lc_intact(st, all, LC_PAGES, "fork") < 0)
		goto out;
	note("round %lu: mprotect page 4 read-only", round);
	if (mprotect(m.dview + 4 * PG, PG, PROT_READ) < 0) {
		fail(errno, "mprotect(PROT_READ) of page 4: %s", strerror(errno));
		goto out;
	}
	if (lc_policy(m.dview + 4 * PG, GS_MPOL_PREFERRED, "mprotect of page 4") < 0 ||
	    lc_maybe_lost(st, m.dview, 4, &st->lost_mprotect, "mprotect of page 4") < 0)
		goto out;
	if (mprotect(m.dview + 4 * PG, PG, PROT_READ | PROT_WRITE) < 0) {
		fail(errno, "mprotect back to read-write of page 4: %s", strerror(errno));
		goto out;
	}
	note("round %lu: munmap pages 5 and 7", round);
	if (munmap(m.dview + 5 * PG, PG) < 0 || munmap(m.dview + 7 * PG, PG) < 0) {
		fail(errno, "munmap of pages 5 and 7: %s", strerror(errno));
		goto out;
	}
	note("round %lu: mremap pages 2-3 elsewhere, then shrink", round);
	res = mmap(NULL, 2 * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (res == MAP_FAILED) {
		fail(errno, "mmap of a place to move to: %s", strerror(errno));
		goto out;
	}
	moved = mremap(m.dview + 2 * PG, 2 * PG, 2 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, res);
	if (moved == MAP_FAILED) {
		fail(errno, "mremap(MREMAP_FIXED) of pages 2-3: %s", strerror(errno));
		goto out;
	}
	if (lc_policy(moved, GS_MPOL_PREFERRED, "mremap of pages 2-3") < 0 ||
	    lc_maybe_lost(st, moved - 2 * PG, 2, &st->lost_mremap, "mremap of pages 2-3") < 0 ||
	    lc_maybe_lost(st, moved - 2 * PG, 3, &st->lost_mremap, "mremap of pages 2-3") < 0)
		goto out;
	if (mremap(moved, 2 * PG, PG, 0) == MAP_FAILED) {
		fail(errno, "shrinking mremap of the moved pages: %s", strerror(errno));
		goto out;
	}
	if (munmap(moved + PG, PG) < 0 || lc_intact(st, rest, 3, "mremap") < 0)
		goto out;
	if (pat_check(m.aview, m.len, st->seed) >= 0) {
		fail(0, "round %lu: gntalloc view changed at offset %ld", round,
		     pat_check(m.aview, m.len, st->seed));
		goto out;
	}
	rc = 0;
out:
	if (res != MAP_FAILED)
		munmap(res, 2 * PG);
	if (m.dview) {
		munmap(m.dview, m.len); /* all that is left of it, holes and all */
		m.dlen = 0;
	}
	gmap_teardown(&m);
	return R->done && R->status == ST_FAIL ? -1 : rc;
}

static void t_policy_lifecycle(void)
{
	struct lc_state st = { 0 };
	char src[PATH_MAX + 64], verdict[128];
	long base, after, delta;
	unsigned long round;

	if (precheck() < 0)
		return;
	if (lc_round(&st, 0) < 0) /* warm-up: caches and the slab settle */
		return;
	base = policy_objects(src, sizeof(src));
	for (round = 1; round <= (unsigned long)opt.policy_loops; round++) {
		progress("rounds", round);
		if (lc_round(&st, round) < 0)
			return;
	}
	after = policy_objects(src, sizeof(src));
	for (int retry = 0; base >= 0 && after >= 0 && labs(after - base) >= opt.policy_loops &&
			    retry < 3; retry++) {
		sleep_ms(200); /* RCU and per-CPU caches: read again before judging */
		after = policy_objects(src, sizeof(src));
	}
	delta = after - base;
	if (base < 0 || after < 0)
		snprintf(verdict, sizeof(verdict), "numa_policy objects not checked");
	else
		snprintf(verdict, sizeof(verdict), "numa_policy objects %ld -> %ld", base, after);
	if (base >= 0 && after >= 0 && labs(delta) >= opt.policy_loops &&
	    opt.backend == BACKEND_XEN) {
		fail(0, "%s after %ld rounds (%s): %s", verdict, opt.policy_loops, src,
		     delta > 0 ? "a policy leaked per round?" : "fewer than before (double free?)");
		return;
	}
	pass("%ld rounds of mbind/split/fork/mprotect/munmap/mremap on %d pages, data verified; "
	     "pages unreadable after mprotect: %d, after mremap: %d (PV: gntdev's MMU notifier "
	     "unmaps the grants); %s (%s)%s",
	     opt.policy_loops + 1, LC_PAGES, st.lost_mprotect, st.lost_mremap, verdict, src,
	     opt.backend == BACKEND_XEN ? "" : " [not judged on the selftest backend]");
}

static void t_mremap_grow(void)
{
	struct gmap m;
	void *r1, *r2;
	int e1 = 0, e2 = 0;

	gmap_init(&m, npages_opt());
	if (precheck() < 0 || gmap_setup(&m, npages_opt()) < 0)
		goto out;
	pat_fill(m.dview, m.len, 1313);
	note("mremap grow in place");
	r1 = mremap(m.dview, m.len, m.len + PG, 0);
	if (r1 == MAP_FAILED) {
		e1 = errno;
	} else {
		m.dlen = m.len + PG;
		fail(0, "mremap grew the gntdev mapping in place to %zu bytes (VM_DONTEXPAND missing)",
		     m.dlen);
		goto out;
	}
	note("mremap grow with MREMAP_MAYMOVE");
	r2 = mremap(m.dview, m.len, m.len + PG, MREMAP_MAYMOVE);
	if (r2 == MAP_FAILED) {
		e2 = errno;
	} else {
		m.dview = r2;
		m.dlen = m.len + PG;
		fail(0, "mremap(MREMAP_MAYMOVE) grew the gntdev mapping to %zu bytes "
			"(VM_DONTEXPAND missing)",
		     m.dlen);
		goto out;
	}
	if (check_views(&m, 1313, "after the refused mremap") < 0)
		goto out;
	pass_e(e2, "growing mremap refused: in place %s (errno %d), MREMAP_MAYMOVE %s (errno %d); "
		   "mapping intact",
	       strerror(e1), e1, strerror(e2), e2);
out:
	gmap_teardown(&m);
}

static void t_partial_munmap(void)
{
	struct gmap m;
	size_t np = npages_opt() < 2 ? 2 : npages_opt();
	size_t half, keep;
	unsigned char vec[1];
	char line[200];
	char offinfo[96] = "";
	struct gs_gntdev_unmap_grant_ref u;

	gmap_init(&m, np);
	if (precheck() < 0 || gmap_setup(&m, np) < 0)
		goto out;
	half = np / 2;
	keep = half * PG;
	pat_fill(m.dview, m.len, 1414);
	note("munmap of the second half of the gntdev mapping");
	if (munmap(m.dview + keep, m.len - keep) < 0) {
		fail(errno, "munmap of pages %zu..%zu of the gntdev mapping: %s", half, np - 1,
		     strerror(errno));
		goto out;
	}
	m.dlen = keep;
	if (mincore(m.dview + keep, PG, vec) == 0 || errno != ENOMEM ||
	    maps_overlap((unsigned long)(uintptr_t)(m.dview + keep),
			 (unsigned long)(uintptr_t)(m.dview + m.len), line, sizeof(line)) == 1) {
		fail(0, "the unmapped half is still mapped");
		goto out;
	}
	note("checking the remaining half");
	if (pat_check(m.dview, keep, 1414) >= 0 || pat_check(m.aview, m.len, 1414) >= 0) {
		fail(0, "data lost after partial munmap (gntdev first half or gntalloc pages)");
		goto out;
	}
	pat_fill(m.dview, keep, 1415);
	if (pat_check(m.aview, keep, 1415) >= 0 || pat_check_at(m.aview, keep, m.len - keep, 1414) >= 0) {
		fail(0, "write through the remaining half not seen through gntalloc");
		goto out;
	}
	if (opt.backend == BACKEND_XEN) {
		struct gs_gntdev_get_offset_for_vaddr q = { .vaddr = (uint64_t)(uintptr_t)m.dview };

		if (ioctl(m.dfd, GS_IOCTL_GNTDEV_GET_OFFSET_FOR_VADDR, &q) == 0)
			snprintf(offinfo, sizeof(offinfo), "; GET_OFFSET_FOR_VADDR offset=%#llx count=%u",
				 (unsigned long long)q.offset, q.count);
		else
			snprintf(offinfo, sizeof(offinfo), "; GET_OFFSET_FOR_VADDR: %s", strerror(errno));
	}
	note("munmap of the rest");
	if (munmap(m.dview, keep) < 0) {
		fail(errno, "munmap of the remaining half: %s", strerror(errno));
		goto out;
	}
	m.dview = NULL;
	m.dlen = 0;
	if (gmap_ungrant(&m) < 0) {
		fail(errno, "IOCTL_GNTDEV_UNMAP_GRANT_REF after unmapping both halves: %s",
		     strerror(errno));
		goto out;
	}
	if (opt.backend == BACKEND_XEN) {
		u.index = m.dindex;
		u.count = (uint32_t)np;
		u.pad = 0;
		if (ioctl(m.dfd, GS_IOCTL_GNTDEV_UNMAP_GRANT_REF, &u) == 0) {
			fail(0, "a second IOCTL_GNTDEV_UNMAP_GRANT_REF succeeded: map still listed");
			goto out;
		}
	}
	if (pat_check(m.aview, keep, 1415) >= 0) {
		fail(0, "gntalloc pages changed after the grant was unmapped");
		goto out;
	}
	pass("munmap of %zu of %zu pages left the rest working; rest unmapped and "
	     "UNMAP_GRANT_REF OK%s",
	     np - half, np, offinfo);
out:
	gmap_teardown(&m);
}

static long gntalloc_limit(char *src, size_t srclen)
{
	char text[32];

	if (opt.backend == BACKEND_XEN && read_text(GNTALLOC_LIMIT_PATH, text, sizeof(text)) == 0 &&
	    atol(text) > 0) {
		snprintf(src, srclen, "%s", GNTALLOC_LIMIT_PATH);
		return atol(text);
	}
	snprintf(src, srclen, "default");
	return GNTALLOC_DEFAULT_LIMIT;
}

static void t_churn(void)
{
	struct gmap m, big;
	char limsrc[80];
	long limit, cycles, c;
	int afd = -1, dfd = -1, left;

	gmap_init(&m, 1);
	gmap_init(&big, 1);
	if (precheck() < 0)
		goto out;
	limit = gntalloc_limit(limsrc, sizeof(limsrc));
	cycles = opt.churn >= 0 ? opt.churn : limit;
	for (c = 0; c < cycles; c++) {
		progress("churn cycles", (unsigned long)c);
		gmap_init(&m, 1);
		m.afd = afd;
		m.dfd = dfd;
		if (gmap_alloc(&m) < 0) {
			if (R->done && R->status == ST_FAIL && R->err == ENOSPC) {
				R->done = 0;
				fail(ENOSPC, "ALLOC_GREF failed with ENOSPC at cycle %ld of %ld (limit %ld): "
					     "grants leaked",
				     c, cycles, limit);
			}
			goto out_keep;
		}
		afd = m.afd;
		if (gmap_map_alloc(&m) < 0)
			goto out_keep;
		if (gmap_grant(&m) < 0) {
			dfd = m.dfd;
			goto out_keep;
		}
		dfd = m.dfd;
		if (gmap_map_dev(&m) < 0)
			goto out_keep;
		pat_fill(m.dview, m.len, (uint64_t)c);
		if (pat_check(m.aview, m.len, (uint64_t)c) >= 0) {
			fail(0, "data mismatch at churn cycle %ld", c);
			goto out_keep;
		}
		if (munmap(m.dview, m.len) < 0) {
			fail(errno, "munmap of gntdev mapping at cycle %ld: %s", c, strerror(errno));
			goto out_keep;
		}
		m.dview = NULL;
		m.dlen = 0;
		if (gmap_ungrant(&m) < 0) {
			fail(errno, "UNMAP_GRANT_REF at cycle %ld: %s", c, strerror(errno));
			goto out_keep;
		}
		if (munmap(m.aview, m.len) < 0) {
			fail(errno, "munmap of gntalloc pages at cycle %ld: %s", c, strerror(errno));
			goto out_keep;
		}
		m.aview = NULL;
		if (gmap_dealloc(&m) < 0) {
			fail(errno, "DEALLOC_GREF at cycle %ld: %s", c, strerror(errno));
			goto out_keep;
		}
	}
	progress("churn cycles", (unsigned long)c);
	left = maps_count_devices();
	if (left != 0) {
		fail(0, "after %ld cycles %d grant-device mappings remain in /proc/self/maps", cycles,
		     left);
		goto out;
	}
	/* Every grant freed: the whole limit can be allocated at once (gntalloc's count is 0). */
	note("final ALLOC_GREF of the whole limit (%ld)", limit);
	gmap_init(&big, (size_t)limit);
	big.afd = afd;
	if (gmap_alloc(&big) < 0) {
		afd = big.afd;
		if (R->done && R->status == ST_FAIL) {
			char old[DETAIL_MAX];

			snprintf(old, sizeof(old), "%s", R->detail);
			R->done = 0;
			fail(R->err, "after %ld cycles the gntalloc count did not return to zero "
				     "(or another gntalloc user holds grants): %s",
			     cycles, old);
		}
		big.afd = -1;
		goto out;
	}
	afd = big.afd;
	if (gmap_dealloc(&big) < 0) {
		fail(errno, "DEALLOC_GREF of the final allocation: %s", strerror(errno));
		goto out;
	}
	pass("cycles=%ld limit=%ld (%s): no grant-device mappings left, final ALLOC_GREF of %ld "
	     "grants OK",
	     cycles, limit, limsrc, limit);
	goto out;
out_keep:
	/* The failing cycle's own resources; the shared fds are closed below. */
	afd = m.afd;
	dfd = m.dfd;
	m.afd = -1;
	m.dfd = -1;
	gmap_teardown(&m);
out:
	if (big.allocated) {
		big.afd = afd;
		gmap_dealloc(&big);
	}
	if (dfd >= 0)
		close(dfd);
	if (afd >= 0)
		close(afd);
}

/* Hidden self-tests of the runner itself; never part of a real run. */
static void t_selftest_crash(void)
{
	note("selftest: raising SIGBUS");
	progress("selftest steps", 1);
	raise(SIGBUS);
	fail(0, "selftest: SIGBUS did not kill the child");
}

static void t_selftest_hang(void)
{
	note("selftest: sleeping forever");
	for (;;)
		pause();
}

/* ------------------------------------------------------------------------------------------ */
/* Runner                                                                                      */
/* ------------------------------------------------------------------------------------------ */

struct subtest {
	const char *name;
	void (*fn)(void);
	int hidden;
	int selected;
	int extra_soak; /* the deadline also covers --soak-seconds */
	int numa_balancing;
};

static struct subtest subtests[] = {
	{ "selftest-crash", t_selftest_crash, 1, 0, 0, 0 },
	{ "selftest-hang", t_selftest_hang, 1, 0, 0, 0 },
	{ "self-map", t_self_map, 0, 0, 0, 0 },
	{ "odirect-read", t_odirect_read, 0, 0, 0, 0 },
	{ "odirect-write", t_odirect_write, 0, 0, 0, 0 },
	{ "io-submit", t_io_submit, 0, 0, 0, 0 },
	{ "vmsplice", t_vmsplice, 0, 0, 0, 0 },
	{ "process-vm-readv", t_process_vm_readv, 0, 0, 0, 0 },
	{ "proc-pid-mem", t_proc_pid_mem, 0, 0, 0, 0 },
	{ "move-pages", t_move_pages, 0, 0, 0, 0 },
	{ "numa-soak", t_numa_soak, 0, 0, 1, 1 },
	{ "mbind-soak", t_mbind_soak, 0, 0, 1, 1 },
	{ "fork", t_fork, 0, 0, 0, 0 },
	{ "mremap-grow", t_mremap_grow, 0, 0, 0, 0 },
	{ "partial-munmap", t_partial_munmap, 0, 0, 0, 0 },
	{ "policy-lifecycle", t_policy_lifecycle, 0, 0, 0, 0 },
	{ "churn", t_churn, 0, 0, 0, 0 },
};
#define NSUBTESTS (sizeof(subtests) / sizeof(subtests[0]))

struct outcome {
	int exited, code, signaled, sig, timed_out, stuck, internal;
	double elapsed;
};

/* Run fn in a child in its own process group under a deadline; r is the shared result page. */
static void run_child(void (*fn)(void), struct result *r, long timeout, struct outcome *o)
{
	pid_t pid;
	siginfo_t si;
	double t0 = now_s(), deadline = t0 + (double)timeout;

	memset(o, 0, sizeof(*o));
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		o->internal = errno;
		return;
	}
	if (pid == 0) {
		struct rlimit nocore = { 0, 0 };

		setpgid(0, 0);
		setrlimit(RLIMIT_CORE, &nocore);
		signal(SIGPIPE, SIG_DFL);
		R = r;
		fn();
		fflush(NULL);
		_exit(0);
	}
	setpgid(pid, pid);
	for (;;) {
		memset(&si, 0, sizeof(si));
		/* WNOWAIT: the child stays a zombie, so its process group id cannot be reused. */
		if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == pid)
			break;
		if (now_s() >= deadline) {
			o->timed_out = 1;
			kill(-pid, SIGKILL);
			kill(pid, SIGKILL);
			for (double give_up = now_s() + 5; now_s() < give_up;) {
				memset(&si, 0, sizeof(si));
				if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
				    si.si_pid == pid)
					break;
				sleep_ms(10);
			}
			if (si.si_pid != pid) {
				o->stuck = 1; /* unkillable (D state?): leave it, go on */
				o->elapsed = now_s() - t0;
				return;
			}
			break;
		}
		sleep_ms(5);
	}
	o->elapsed = now_s() - t0;
	kill(-pid, SIGKILL); /* grandchildren left in the child's group */
	{
		int st = reap(pid);

		if (WIFEXITED(st)) {
			o->exited = 1;
			o->code = WEXITSTATUS(st);
		} else if (WIFSIGNALED(st)) {
			o->signaled = 1;
			o->sig = WTERMSIG(st);
		}
	}
}

static void sanitize(char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s == 0x7f)
			*s = ' ';
}

static void last_words(const struct result *r, char *out, size_t len)
{
	int n = snprintf(out, len, "last step: %s", r->note[0] ? r->note : "(none)");

	if (r->progress_what[0] && n > 0 && (size_t)n < len)
		snprintf(out + n, len - (size_t)n, "; %s=%lu", r->progress_what, r->progress);
}

static int counts[3];
static int internal_error;

static void report(const char *name, int st, int err, const char *detail)
{
	char buf[DETAIL_MAX + 256];

	snprintf(buf, sizeof(buf), "%s%s", opt.backend == BACKEND_ANON ? "[selftest-backend anon] " : "",
		 detail);
	sanitize(buf);
	counts[st]++;
	printf("GNTSTRESS %s %s errno=%d detail=%s\n", name, status_name[st], err < 0 ? -err : err,
	       buf);
	fflush(stdout);
}

/*
 * A line in the kernel log naming the subtest that begins or ends, so that the classifier
 * blames a BUG or WARNING in dmesg on the subtest that was running. Opened per line: /dev/kmsg
 * rate-limits each open file (10 lines per 5 s), and a dropped marker would blame the wrong one.
 */
static void kmsg_mark(const char *name, const char *what)
{
	char line[160];
	int fd;

	if (opt.backend == BACKEND_ANON)
		return; /* no kernel under test: leave the machine's own log alone */
	fd = open("/dev/kmsg", O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return; /* not root, or no /dev/kmsg: the classifier falls back to the cell */
	snprintf(line, sizeof(line), "<6>gntstress: subtest %s %s\n", name, what);
	if (write(fd, line, strlen(line)) < 0)
		fprintf(stderr, "gntstress: cannot write to /dev/kmsg: %s\n", strerror(errno));
	close(fd);
}

static void run_subtest(struct subtest *t)
{
	struct result *r;
	struct outcome o;
	char words[NOTE_MAX + 96], detail[2 * DETAIL_MAX];
	long timeout = opt.timeout + (t->extra_soak ? opt.soak_seconds : 0);
	char nb_old[16] = "";
	int nb_changed = 0;

	double t0 = now_s();

	fprintf(stderr, "gntstress: %s (limit %lds)\n", t->name, timeout);
	kmsg_mark(t->name, "begin");
	r = mmap(NULL, sizeof(*r), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (r == MAP_FAILED) {
		internal_error = 1;
		report(t->name, ST_SKIP, errno, "internal error: cannot allocate the result page");
		return;
	}
	memset(r, 0, sizeof(*r));
	if (t->numa_balancing && opt.enable_numa_balancing &&
	    read_text("/proc/sys/kernel/numa_balancing", nb_old, sizeof(nb_old)) == 0 &&
	    strcmp(nb_old, "0") == 0) {
		if (write_text("/proc/sys/kernel/numa_balancing", "1") == 0)
			nb_changed = 1;
		else
			fprintf(stderr, "gntstress: cannot enable kernel.numa_balancing: %s\n",
				strerror(errno));
	}
	run_child(t->fn, r, timeout, &o);
	if (nb_changed)
		write_text("/proc/sys/kernel/numa_balancing", nb_old);
	last_words(r, words, sizeof(words));
	if (o.internal) {
		internal_error = 1;
		snprintf(detail, sizeof(detail), "internal error: fork: %s", strerror(o.internal));
		report(t->name, ST_SKIP, o.internal, detail);
	} else if (o.timed_out) {
		snprintf(detail, sizeof(detail), "timeout after %lds, child killed%s; %s%s%s", timeout,
			 o.stuck ? " but not reaped (unkillable)" : "", words,
			 r->done ? "; verdict before: " : "", r->done ? r->detail : "");
		report(t->name, ST_FAIL, 0, detail);
	} else if (o.signaled) {
		snprintf(detail, sizeof(detail), "killed by signal %d (%s) after %.2fs; %s%s%s", o.sig,
			 signame(o.sig), o.elapsed, words, r->done ? "; verdict before: " : "",
			 r->done ? r->detail : "");
		report(t->name, ST_FAIL, 0, detail);
	} else if (!r->done) {
		snprintf(detail, sizeof(detail), "child exited with status %d without a verdict; %s",
			 o.code, words);
		report(t->name, ST_FAIL, 0, detail);
	} else {
		report(t->name, r->status, r->err, r->detail);
	}
	munmap(r, sizeof(*r));
	kmsg_mark(t->name, "end");
	/* on stderr, so the stdout format stays as documented; where a slow job spends its time */
	fprintf(stderr, "gntstress: %s took %.2fs\n", t->name, now_s() - t0);
}

/* ------------------------------------------------------------------------------------------ */
/* Own domid and paging mode                                                                   */
/* ------------------------------------------------------------------------------------------ */

/* Bits of /sys/hypervisor/properties/features submap 0 (its last 8 hex digits); -1 unknown. */
static long xen_features(void)
{
	char text[80];
	size_t n;

	if (read_text("/sys/hypervisor/properties/features", text, sizeof(text)) < 0)
		return -1;
	n = strlen(text);
	if (n == 0)
		return -1;
	return (long)strtoul(text + (n > 8 ? n - 8 : 0), NULL, 16);
}

/* Child body: ask xenstore for "domid" (relative to our own /local/domain/N). */
static void xenstore_domid(void)
{
	const char *paths[] = { "/dev/xen/xenbus", "/proc/xen/xenbus" };
	struct {
		struct gs_xsd_sockmsg h;
		char body[8];
	} req = { { GS_XS_READ, 1, 0, 6 }, "domid" };
	char reply[sizeof(struct gs_xsd_sockmsg) + 64];
	struct gs_xsd_sockmsg h;
	struct pollfd pfd;
	int fd = -1;
	ssize_t n;

	for (size_t i = 0; fd < 0 && i < 2; i++)
		fd = open(paths[i], O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		skip(errno, "no xenbus device: %s", strerror(errno));
		return;
	}
	note("xenstore read domid");
	if (write(fd, &req, sizeof(req.h) + 6) != (ssize_t)(sizeof(req.h) + 6)) {
		skip(errno, "xenbus write: %s", strerror(errno));
		return;
	}
	pfd.fd = fd;
	pfd.events = POLLIN;
	if (poll(&pfd, 1, 3000) <= 0) {
		skip(ETIMEDOUT, "no answer from xenstore");
		return;
	}
	n = read(fd, reply, sizeof(reply) - 1);
	if (n < (ssize_t)sizeof(h)) {
		skip(errno, "short xenstore reply");
		return;
	}
	memcpy(&h, reply, sizeof(h));
	reply[n] = '\0';
	if (h.type == GS_XS_ERROR) {
		skip(0, "xenstore: %s", reply + sizeof(h));
		return;
	}
	R->progress = strtoul(reply + sizeof(h), NULL, 10);
	pass("xenstore");
}

static void detect_domain(void)
{
	char caps[128];
	long feat = xen_features();

	if (feat >= 0)
		opt.ptemod = (feat >> GS_XENFEAT_auto_translated_physmap) & 1 ? 0 : 1;
	if (opt.domid >= 0) {
		opt.domid_source = "--domid";
		return;
	}
	if (opt.backend == BACKEND_ANON)
		return;
	if (access(GNTALLOC_PATH, F_OK) < 0 || access(GNTDEV_PATH, F_OK) < 0)
		return; /* every subtest SKIPs on the missing device anyway */
	/* dom0: the control domain is domid 0 (xenfs capabilities, or XENFEAT_dom0). */
	if (read_text("/proc/xen/capabilities", caps, sizeof(caps)) == 0 && strstr(caps, "control_d")) {
		opt.domid = 0;
		opt.domid_source = "dom0 per /proc/xen/capabilities";
		return;
	}
	if (feat >= 0 && ((feat >> GS_XENFEAT_dom0) & 1)) {
		opt.domid = 0;
		opt.domid_source = "dom0 per XENFEAT_dom0 in /sys/hypervisor/properties/features";
		return;
	}
	{
		struct result *r = mmap(NULL, sizeof(*r), PROT_READ | PROT_WRITE,
					MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		struct outcome o;

		if (r == MAP_FAILED) {
			snprintf(opt.domid_why, sizeof(opt.domid_why), "mmap: %s", strerror(errno));
			return;
		}
		memset(r, 0, sizeof(*r));
		run_child(xenstore_domid, r, 5, &o);
		if (r->done && r->status == ST_PASS && !o.signaled && !o.timed_out) {
			opt.domid = (long)r->progress;
			opt.domid_source = "xenstore domid";
		} else {
			snprintf(opt.domid_why, sizeof(opt.domid_why),
				 "not dom0 per /proc/xen/capabilities or features; xenstore: %.150s",
				 r->done ? r->detail : (o.timed_out ? "timeout" : "failed"));
		}
		munmap(r, sizeof(*r));
	}
}

/* ------------------------------------------------------------------------------------------ */
/* Command line                                                                                */
/* ------------------------------------------------------------------------------------------ */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: gntstress [--list] [--only NAME[,NAME...]] [--soak-seconds N] [--pages N]\n"
		"                 [--churn N] [--timeout N] [--domid N] [--odirect-path PATH]\n"
		"                 [--policy-loops N] [--enable-numa-balancing]\n"
		"  --soak-seconds N   numa-soak and mbind-soak duration (default 10)\n"
		"  --pages N          pages per grant mapping, 1..1024 (default 4)\n"
		"  --churn N          churn cycles (default: the gntalloc limit, 1024)\n"
		"  --policy-loops N   policy-lifecycle rounds after its warm-up round (default 8)\n"
		"  --timeout N        per-subtest time limit in seconds (default 60; numa-soak and\n"
		"                     mbind-soak get this plus --soak-seconds)\n"
		"  --domid N          our own domid (default: 0 on dom0, else xenstore)\n"
		"  --odirect-path P   block device, file or directory for the O_DIRECT subtests\n"
		"                     (default: /dev/ram0, then $TMPDIR, /var/tmp, /tmp)\n"
		"  --enable-numa-balancing  set kernel.numa_balancing=1 during the soaks, then restore\n"
		"output: 'GNTSTRESS <name> <PASS|FAIL|SKIP> errno=<n> detail=<text>' per subtest,\n"
		"        then 'GNTSTRESS-SUMMARY pass=N fail=N skip=N'\n"
		"exit: 0 no FAIL, 1 any FAIL, 2 usage error, 3 internal error\n");
}

__attribute__((format(printf, 1, 2), noreturn)) static void usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "gntstress: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	usage(stderr);
	exit(EXIT_USAGE);
}

static long parse_num(const char *opt_name, const char *s, long lo, long hi)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		usage_error("%s: expected an integer in %ld..%ld, got '%s'", opt_name, lo, hi, s);
	return v;
}

static struct subtest *find_subtest(const char *name)
{
	for (size_t i = 0; i < NSUBTESTS; i++)
		if (strcmp(subtests[i].name, name) == 0)
			return &subtests[i];
	return NULL;
}

enum {
	OPT_SOAK = 256,
	OPT_ONLY,
	OPT_LIST,
	OPT_PAGES,
	OPT_CHURN,
	OPT_POLICY_LOOPS,
	OPT_TIMEOUT,
	OPT_DOMID,
	OPT_ODIRECT,
	OPT_ENABLE_NB,
	OPT_HELP,
	OPT_ST_CRASH,
	OPT_ST_HANG,
	OPT_ST_BACKEND,
};

#ifndef GNTSTRESS_NO_MAIN
int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "soak-seconds", required_argument, NULL, OPT_SOAK },
		{ "only", required_argument, NULL, OPT_ONLY },
		{ "list", no_argument, NULL, OPT_LIST },
		{ "pages", required_argument, NULL, OPT_PAGES },
		{ "churn", required_argument, NULL, OPT_CHURN },
		{ "policy-loops", required_argument, NULL, OPT_POLICY_LOOPS },
		{ "timeout", required_argument, NULL, OPT_TIMEOUT },
		{ "domid", required_argument, NULL, OPT_DOMID },
		{ "odirect-path", required_argument, NULL, OPT_ODIRECT },
		{ "enable-numa-balancing", no_argument, NULL, OPT_ENABLE_NB },
		{ "help", no_argument, NULL, OPT_HELP },
		/* Self-tests of gntstress itself, hidden from --help and --list. */
		{ "selftest-crash", no_argument, NULL, OPT_ST_CRASH },
		{ "selftest-hang", no_argument, NULL, OPT_ST_HANG },
		{ "selftest-backend", required_argument, NULL, OPT_ST_BACKEND },
		{ NULL, 0, NULL, 0 },
	};
	int list = 0, only = 0, c;

	opterr = 0; /* our own message, then the usage */
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case OPT_SOAK:
			opt.soak_seconds = parse_num("--soak-seconds", optarg, 0, 86400);
			break;
		case OPT_PAGES:
			opt.pages = parse_num("--pages", optarg, 1, GNTALLOC_DEFAULT_LIMIT);
			break;
		case OPT_CHURN:
			opt.churn = parse_num("--churn", optarg, 0, 100000000);
			break;
		case OPT_POLICY_LOOPS:
			opt.policy_loops = parse_num("--policy-loops", optarg, 1, 100000);
			break;
		case OPT_TIMEOUT:
			opt.timeout = parse_num("--timeout", optarg, 1, 86400);
			break;
		case OPT_DOMID:
			opt.domid = parse_num("--domid", optarg, 0, 0x7fef);
			break;
		case OPT_ODIRECT:
			opt.odirect_path = optarg;
			break;
		case OPT_ENABLE_NB:
			opt.enable_numa_balancing = 1;
			break;
		case OPT_LIST:
			list = 1;
			break;
		case OPT_HELP:
			usage(stdout);
			return EXIT_ALL_OK;
		case OPT_ONLY: {
			char *copy = strdup(optarg), *save = NULL, *tok;

			only = 1;
			for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
				struct subtest *t = find_subtest(tok);

				if (!t || t->hidden)
					usage_error("--only: unknown subtest '%s' (see --list)", tok);
				t->selected = 1;
			}
			free(copy);
			break;
		}
		case OPT_ST_CRASH:
			find_subtest("selftest-crash")->selected = 1;
			break;
		case OPT_ST_HANG:
			find_subtest("selftest-hang")->selected = 1;
			break;
		case OPT_ST_BACKEND:
			if (strcmp(optarg, "anon") != 0)
				usage_error("--selftest-backend: only 'anon' is known");
			opt.backend = BACKEND_ANON;
			break;
		default:
			usage_error("unknown option or missing argument: '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		usage_error("unexpected argument '%s'", argv[optind]);
	if (list) {
		for (size_t i = 0; i < NSUBTESTS; i++)
			if (!subtests[i].hidden)
				printf("%s\n", subtests[i].name);
		return EXIT_ALL_OK;
	}
	if (!only)
		for (size_t i = 0; i < NSUBTESTS; i++)
			if (!subtests[i].hidden)
				subtests[i].selected = 1;
	signal(SIGPIPE, SIG_IGN);
	if (opt.backend == BACKEND_ANON)
		fprintf(stderr, "gntstress: SELFTEST BACKEND: memfd pages instead of Xen grants; "
				"results say nothing about gntdev\n");
	detect_domain();
	for (size_t i = 0; i < NSUBTESTS; i++)
		if (subtests[i].selected)
			run_subtest(&subtests[i]);
	printf("GNTSTRESS-SUMMARY pass=%d fail=%d skip=%d\n", counts[ST_PASS], counts[ST_FAIL],
	       counts[ST_SKIP]);
	fflush(stdout);
	if (counts[ST_FAIL])
		return EXIT_ANY_FAIL;
	return internal_error ? EXIT_INTERNAL : EXIT_ALL_OK;
}
#endif
