namespace Harness.Smp.Cpu;

/// <summary>
/// The CPUID leaves the machine reports: only features it implements. No x87/SSE bits are set, so
/// a guest that checks CPUID will not use them. The integer extensions of x86-64-v3 are claimed
/// (BMI1, BMI2, ADX in leaf 7; MOVBE, POPCNT in leaf 1; LZCNT in 0x80000001): Exec/Bmi.cs and
/// Exec/Bits.cs implement them.
/// </summary>
internal static class CpuidTable
{
    public const uint MaxBasic = 7, MaxExtended = 0x8000_0008;

    // "HarnessEmu64" in EBX, EDX, ECX order.
    private const uint Vendor1 = 0x6E726148, Vendor2 = 0x45737365, Vendor3 = 0x3436756D;

    // Feature bits claimed (SDM vol. 2, CPUID), by register.
    private const uint Leaf1Ecx = 1u << 13 | 1u << 21 | 1u << 22 | 1u << 23;                          // CX16, x2APIC, MOVBE, POPCNT
    private const uint Leaf1Edx = 1u << 4 | 1u << 5 | 1u << 6 | 1u << 8 | 1u << 9 | 1u << 15 | 1u << 19; // TSC, MSR, PAE, CX8, APIC, CMOV, CLFSH
    private const uint Leaf7Ebx = 1u << 3 | 1u << 8 | 1u << 19;                                        // BMI1, BMI2, ADX (subleaf 0)
    private const uint Ext1Ecx = 1u << 5;                                                              // LZCNT
    private const uint Ext1Edx = 1u << 11 | 1u << 20 | 1u << 29;                                       // SYSCALL, NX, LM

    /// <summary>The leaves (subleaf 0), as EAX, EBX, ECX, EDX; every other leaf and subleaf reads as zeros.</summary>
    private static readonly Dictionary<uint, (uint A, uint B, uint C, uint D)> leaves = new()
    {
        [0] = (MaxBasic, Vendor1, Vendor3, Vendor2),
        [1] = (0x0000_0600, 8 << 8, Leaf1Ecx, Leaf1Edx),   // family 6 model 0 stepping 0; CLFLUSH line 8 qwords (EBX: + APIC id, CPU count)
        [7] = (0, Leaf7Ebx, 0, 0),
        [0x8000_0000] = (MaxExtended, Vendor1, Vendor3, Vendor2),
        [0x8000_0001] = (0, 0, Ext1Ecx, Ext1Edx),
        [0x8000_0008] = (0x3028, 0, 0, 0),                 // 48-bit linear, 40-bit physical addresses
    };

    public static (uint a, uint b, uint c, uint d) Leaf(Vcpu v, uint leaf, uint sub)
    {
        if (!leaves.TryGetValue(leaf, out var r) || (leaf == 7 && sub != 0)) return (0, 0, 0, 0);
        // Leaf 1's EBX names the asking vCPU: initial APIC id in bits 31-24, logical CPU count in 23-16.
        if (leaf == 1) r.B |= (uint)v.Index << 24 | (uint)Math.Min(v.Machine.Vcpus.Length, 255) << 16;
        return r;
    }
}
