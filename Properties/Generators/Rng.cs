namespace Harness.Properties.Generators;

/// <summary>
/// SplitMix64: the deterministic source every generator draws from, so that one FsCheck seed (or
/// one integer) names one program. Shared with the differential suite (linked there).
/// </summary>
public sealed class Rng(ulong seed)
{
    ulong state = seed;
    public ulong NextU64()
    {
        ulong z = state += 0x9E37_79B9_7F4A_7C15;
        z = (z ^ (z >> 30)) * 0xBF58_476D_1CE4_E5B9;
        z = (z ^ (z >> 27)) * 0x94D0_49BB_1331_11EB;
        return z ^ (z >> 31);
    }
    public int Next(int n) => (int)(NextU64() % (ulong)n);
    public int Range(int lo, int hiInclusive) => lo + Next(hiInclusive - lo + 1);
    public bool Chance(double p) => (NextU64() >> 11) * (1.0 / (1UL << 53)) < p;
    public T Pick<T>(IReadOnlyList<T> xs) => xs[Next(xs.Count)];
}
