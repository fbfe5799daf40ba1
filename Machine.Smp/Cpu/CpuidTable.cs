namespace Harness.Machine.Cpu;

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
    private static readonly uint Vendor1 = 0x6E726148, Vendor2 = 0x45737365, Vendor3 = 0x3436756D;

    public static (uint a, uint b, uint c, uint d) Leaf(Vcpu v, uint leaf, uint sub)
    {
        switch (leaf)
        {
            case 0: return (MaxBasic, Vendor1, Vendor3, Vendor2);
            case 1:
            {
                uint a = 0x0000_0600; // family 6, model 0, stepping 0
                uint b = ((uint)v.Index << 24) | ((uint)Math.Min(v.Machine.Vcpus.Length, 255) << 16) | (8 << 8);
                uint c = (1u << 13) | (1u << 21) | (1u << 22) | (1u << 23); // CX16, x2APIC, MOVBE, POPCNT
                uint d = (1u << 4) | (1u << 5) | (1u << 6) | (1u << 8) | (1u << 9) | (1u << 15) | (1u << 19); // TSC MSR PAE CX8 APIC CMOV CLFSH
                return (a, b, c, d);
            }
            // Structured extended features, subleaf 0: BMI1 (bit 3), BMI2 (bit 8), ADX (bit 19) in EBX.
            case 7: return sub == 0 ? (0u, (1u << 3) | (1u << 8) | (1u << 19), 0u, 0u) : (0u, 0u, 0u, 0u);
            case 0x8000_0000: return (MaxExtended, Vendor1, Vendor3, Vendor2);
            case 0x8000_0001: return (0, 0, 1u << 5, (1u << 11) | (1u << 20) | (1u << 29)); // LZCNT; SYSCALL NX LM
            case 0x8000_0008: return (0x3028, 0, 0, 0); // 48-bit linear, 40-bit physical
            default: return (0, 0, 0, 0);
        }
    }
}
