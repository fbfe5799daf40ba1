/* Wrappers for the x86 instructions every ring-0 guest uses (kernel, sample guests): port I/O,
 * MSRs, time, CR2/CR3, TLB, interrupt flag. One copy, so the images cannot drift apart. */
#ifndef GUEST_X86_H
#define GUEST_X86_H

static inline void outb(unsigned short port, unsigned char v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port) : "memory"); }
static inline void outl(unsigned short port, unsigned int v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port) : "memory"); }

static inline unsigned long rdmsr(unsigned int msr)
{
    unsigned int lo, hi;
    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr) : "memory");
    return ((unsigned long)hi << 32) | lo;
}

static inline void wrmsr(unsigned int msr, unsigned long v)
{
    __asm__ volatile("wrmsr" : : "c"(msr), "a"((unsigned int)v), "d"((unsigned int)(v >> 32)) : "memory");
}

/* Guest time: the machine's rdtsc returns this vCPU's retired-instruction count. */
static inline unsigned long rdtsc(void)
{
    unsigned int lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi) : : "memory");
    return ((unsigned long)hi << 32) | lo;
}

static inline unsigned long read_cr2(void) { unsigned long v; __asm__ volatile("mov %%cr2, %0" : "=r"(v) : : "memory"); return v; }
static inline unsigned long read_cr3(void) { unsigned long v; __asm__ volatile("mov %%cr3, %0" : "=r"(v)); return v; }
static inline void write_cr3(unsigned long v) { __asm__ volatile("mov %0, %%cr3" : : "r"(v) : "memory"); }
static inline void invlpg(unsigned long va) { __asm__ volatile("invlpg (%0)" : : "r"(va) : "memory"); }
static inline unsigned long read_flags(void) { unsigned long f; __asm__ volatile("pushfq; popq %0" : "=r"(f) : : "memory"); return f; }
static inline void cpu_relax(void) { __asm__ volatile("pause" : : : "memory"); }
static inline void cpu_halt(void) { __asm__ volatile("hlt" : : : "memory"); }
static inline void irq_enable(void) { __asm__ volatile("sti" : : : "memory"); }
static inline void irq_disable(void) { __asm__ volatile("cli" : : : "memory"); }

#endif
