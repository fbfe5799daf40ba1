using Harness.Dbt.Cache;
using Harness.Smp;

namespace Harness.Dbt.Reports;

/// <summary>
/// A DBT over a loaded but never-run kernel image, for translating on demand (reports, golden
/// files): the machine's boot page tables (identity map and -2 GiB kernel alias) are installed in
/// vCPU 0 so the translator can read kernel text through them, exactly as it does at run time.
/// Nothing executes, so nothing is chained: every direct branch to code that is not yet translated
/// keeps its edge stub. Translations depend only on the image and the options (one thread, a
/// fixed order), so the cache layout is reproducible.
/// </summary>
public sealed unsafe class StaticTranslation : IDisposable
{
    public readonly Machine Machine;
    public readonly KernelDbt Dbt;
    public readonly KernelSymbols Symbols;
    public readonly Vcpu Vcpu;

    public StaticTranslation(byte[] elf, string name, DbtOptions? options = null)
    {
        Symbols = KernelSymbols.FromElf(elf, name);
        Machine = new Machine(new MachineOptions { Vcpus = 1, MemoryBytes = 64UL << 20 });
        try
        {
            Machine.LoadElf(elf, name);
            var o = options ?? DbtOptions.Default;
            // Exception-table registration needs the kernel's symbols; options that already carry them are used as they are.
            if (o.Kernel is null)
                o = new DbtOptions
                {
                    CallRet = o.CallRet, MaxBlockInstructions = o.MaxBlockInstructions, ExceptionTableCapacity = o.ExceptionTableCapacity,
                    PerCpuOffset = o.PerCpuOffset, PlantedLookupWithInterrupts = o.PlantedLookupWithInterrupts,
                    PlantedNoTxNextPcRestore = o.PlantedNoTxNextPcRestore, Kernel = Kernel.KernelImage.FromElf(elf, name),
                };
            Dbt = KernelDbt.Attach(Machine, o);
            Vcpu = Machine.Vcpus[0];
            var boot = Machine.BootState;
            var s = Vcpu.S;
            s->Cr0 = boot.Cr0; s->Cr3 = boot.Cr3; s->Cr4 = boot.Cr4; s->Efer = boot.Efer;
        }
        catch
        {
            Machine.Dispose();
            throw;
        }
    }

    public static StaticTranslation Load(string path, DbtOptions? options = null) => new(File.ReadAllBytes(path), path, options);

    /// <summary>The translation of native (normal mode), made now if needed.</summary>
    public ulong Translate(ulong native) => Dbt.Translator.GetOrTranslate(Vcpu, native);

    /// <summary>The entry-mode translation an interrupt gate of this vector would get (the shadow IDT's).</summary>
    public ulong TranslateGate(ulong native, int vector) => Dbt.Translator.TranslateEntry(Vcpu, native, Kernel.KernelEntries.EntrySlotDelta(vector));

    /// <summary>Every edge stub made so far, in creation order.</summary>
    public IEnumerable<Dispatch.Edge> Edges()
    {
        var pool = Dbt.Cache.Edges;
        int n = Dbt.Edges.Count;
        for (int i = 0; i < n; i++)
            if (Dbt.Edges.Lookup(pool.Start + (ulong)i * CodeCache.EdgeStubSize) is { } e) yield return e;
    }

    /// <summary>The DBT's exception-table registrations: (cache address of the faultable copy, cache address of the fixup's translation).</summary>
    public IReadOnlyList<(ulong Fault, ulong Fixup)> ExceptionEntries()
    {
        var t = Dbt.ExceptionTables;
        var list = new List<(ulong, ulong)>();
        for (int i = 0; i < t.Count; i++) list.Add((Dbt.Cache.ReadU64(t.Table + (ulong)i * 16), Dbt.Cache.ReadU64(t.Table + (ulong)i * 16 + 8)));
        return list;
    }

    public void Dispose() => Machine.Dispose();
}
