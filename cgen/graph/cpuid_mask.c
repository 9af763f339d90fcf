/* cpuid_mask: make a process see an AVX2 + FMA x86-64 CPU on an AVX-512 machine.

   Loaded with LD_PRELOAD into the child that runs onnxruntime for `cgen bench --target
   x86-avx2` (cgen/graph/ort_peer.py).  onnxruntime's MLAS picks its kernels from CPUID at
   run time and has no switch to stay on AVX2, so this library turns on CPUID faulting
   (arch_prctl ARCH_SET_CPUID 0: every `cpuid` of this thread and the threads it creates
   raises SIGSEGV), and its SIGSEGV handler runs the real instruction with the AVX-512,
   AMX and newer VEX feature bits cleared (MASKS), then steps over it.

   Only code that runs after this constructor is masked: the dynamic loader has read CPUID
   already (glibc's string functions keep their native choice); libraries loaded later
   (numpy, onnxruntime) see the masked bits.  XGETBV is not faulted: a program that asks
   the OS for the ZMM state still gets yes, but every library asks CPUID first.

   cpuid_mask_status is 0 when the mask is active, else the errno of the failed
   arch_prctl; cpuid_mask_traps counts the emulated instructions (read with ctypes). */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#ifndef ARCH_SET_CPUID
#define ARCH_SET_CPUID 0x1012
#endif

/* Feature bits an AVX2 + FMA host (Haswell .. Zen 3) lacks: (leaf, subleaf, register,
   bits).  Registers: 0 EAX, 1 EBX, 2 ECX, 3 EDX. */
struct cpuid_mask { unsigned leaf, subleaf, reg; uint32_t bits; };

#define BIT(n) (UINT32_C(1) << (n))
static const struct cpuid_mask MASKS[] = {
    /* leaf 7.0 EBX: AVX512F 16, DQ 17, IFMA 21, PF 26, ER 27, CD 28, BW 30, VL 31 */
    {7, 0, 1, BIT(16) | BIT(17) | BIT(21) | BIT(26) | BIT(27) | BIT(28) | BIT(30) | BIT(31)},
    /* leaf 7.0 ECX: AVX512_VBMI 1, VBMI2 6, VNNI 11, BITALG 12, VPOPCNTDQ 14 */
    {7, 0, 2, BIT(1) | BIT(6) | BIT(11) | BIT(12) | BIT(14)},
    /* leaf 7.0 EDX: 4VNNIW 2, 4FMAPS 3, VP2INTERSECT 8, AMX-BF16 22, AVX512_FP16 23,
       AMX-TILE 24, AMX-INT8 25 */
    {7, 0, 3, BIT(2) | BIT(3) | BIT(8) | BIT(22) | BIT(23) | BIT(24) | BIT(25)},
    /* leaf 7.1 EAX: AVX-VNNI 4, AVX512_BF16 5, AMX-FP16 21, AVX-IFMA 23 */
    {7, 1, 0, BIT(4) | BIT(5) | BIT(21) | BIT(23)},
    /* leaf 7.1 EDX: AVX-VNNI-INT8 4, AVX-NE-CONVERT 5, AMX-COMPLEX 8, AVX-VNNI-INT16 10,
       AVX10 19 */
    {7, 1, 3, BIT(4) | BIT(5) | BIT(8) | BIT(10) | BIT(19)},
};

int cpuid_mask_status = -1;
volatile unsigned long cpuid_mask_traps = 0;
static struct sigaction previous;

static void on_segv(int sig, siginfo_t *info, void *ctx);

/* 1 while the mask is active: faulting on and this library's handler still installed
   (a SIGSEGV handler installed later, such as Python's faulthandler, would take the
   faults and the process would die at its next cpuid) */
int cpuid_mask_active(void)
{
    struct sigaction now;
    if (cpuid_mask_status != 0 || sigaction(SIGSEGV, NULL, &now) != 0)
        return 0;
    return (now.sa_flags & SA_SIGINFO) && now.sa_sigaction == on_segv;
}

static long set_cpuid(int enabled)
{
    return syscall(SYS_arch_prctl, ARCH_SET_CPUID, (unsigned long)enabled);
}

static void on_segv(int sig, siginfo_t *info, void *ctx)
{
    ucontext_t *uc = (ucontext_t *)ctx;
    greg_t *r = uc->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)r[REG_RIP];
    uint32_t out[4], leaf = (uint32_t)r[REG_RAX], subleaf = (uint32_t)r[REG_RCX];
    size_t i;
    int saved = errno;
    (void)sig;
    (void)info;
    /* a fault of a cpuid instruction carries si_code SI_KERNEL; a real segfault's RIP
       is not read (it may be unmapped) */
    if (info->si_code != SI_KERNEL || ip[0] != 0x0F || ip[1] != 0xA2) {
        /* not ours: the previous disposition takes the re-executed fault */
        sigaction(SIGSEGV, &previous, NULL);
        return;
    }
    set_cpuid(1);
    __asm__ __volatile__("cpuid"
                         : "=a"(out[0]), "=b"(out[1]), "=c"(out[2]), "=d"(out[3])
                         : "a"(leaf), "c"(subleaf));
    set_cpuid(0);
    for (i = 0; i < sizeof MASKS / sizeof MASKS[0]; ++i)
        if (MASKS[i].leaf == leaf && MASKS[i].subleaf == subleaf)
            out[MASKS[i].reg] &= ~MASKS[i].bits;
    /* cpuid writes the low 32 bits and zeroes the upper half of each register */
    r[REG_RAX] = (greg_t)out[0];
    r[REG_RBX] = (greg_t)out[1];
    r[REG_RCX] = (greg_t)out[2];
    r[REG_RDX] = (greg_t)out[3];
    r[REG_RIP] += 2;
    ++cpuid_mask_traps;
    errno = saved;
}

__attribute__((constructor)) static void cpuid_mask_init(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, &previous) != 0) {
        cpuid_mask_status = errno;
        return;
    }
    if (set_cpuid(0) != 0) {
        cpuid_mask_status = errno;
        sigaction(SIGSEGV, &previous, NULL);
        return;
    }
    cpuid_mask_status = 0;
}
