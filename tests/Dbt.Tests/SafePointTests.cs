using Harness.Tests.Shared;
using Harness.Smp;
using Harness.Smp.Control;
using Harness.Smp.Cpu;
using Xunit;

namespace Harness.Dbt.Tests;

/// <summary>
/// Where a world stop (switchoff, flush) may park a vCPU (Switch.SafePoint, installed as
/// Machine.SafePoint): at a translated instruction boundary it can map to native, but never on an
/// interrupt-entry path before the kernel saved tx-nextpc in the frame's redundant slot (an
/// entry-mode block). Parked there, a frame that had interrupted the exit stub kept a stale slot
/// word and the iretq later jumped through the kernel's native value (idle threads crashing at
/// 0 or 0x10 on 4 vCPUs with a tiny cache, about 1 run in 10).
/// </summary>
public class SafePointTests
{
    [Fact]
    public void AWorldStopNeverParksAVcpuOnAnInterruptEntryPath()
    {
        using var m = new Machine(new MachineOptions
        {
            Vcpus = 1, MemoryBytes = 64UL << 20, Control = new Deterministic(1000), MaxInstructions = 3_000_000, Console = new MemoryStream(),
        });
        var elf = File.ReadAllBytes(KernelSupport.KernelPath);
        m.LoadElf(elf, "kernel.elf");
        var dbt = KernelDbt.Attach(m, new DbtOptions { Kernel = Kernel.KernelImage.FromElf(elf, "kernel.elf") });
        bool? entryPath = null, ordinary = null, fixupNative = null, fixupTranslated = null, otherNative = null;
        var image = Kernel.KernelImage.FromElf(elf, "kernel.elf");
        ulong fixup = image.Symbol("exception_fixup")!.Value, kmain = image.Symbol("kmain")!.Value;
        string where = "";
        // At a block boundary on vCPU 0 in kernel mode (re-armed until then), with interrupt entries
        // already translated: ask the filter about an entry-mode block start and an ordinary one.
        long at = 1_000_000;
        HostAgent? probe = null;
        probe = m.At(at, v =>
        {
            var blocks = dbt.Translator.Blocks;
            var entry = blocks.FirstOrDefault(b => b.EntrySlotDelta is not null);
            var plain = blocks.FirstOrDefault(b => b.EntrySlotDelta is null && b.NativeInstructions > 1);
            if (v.Cpl != 0 || entry is null || plain is null) { m.ScheduleHostEvent(probe!, at += 1000); return; }
            ulong rip = v.Rip;
            v.Rip = entry.CacheStart;
            entryPath = m.AtSafePoint(v);
            v.Rip = plain.CacheStart;
            ordinary = m.AtSafePoint(v);
            v.Rip = fixup;
            fixupNative = m.AtSafePoint(v);
            v.Rip = dbt.Translator.GetOrTranslate(v, fixup);
            fixupTranslated = m.AtSafePoint(v);
            v.Rip = kmain;
            otherNative = m.AtSafePoint(v);
            v.Rip = rip;
            where = $"entry block 0x{entry.CacheStart:x} (native 0x{entry.NativeStart:x}), ordinary block 0x{plain.CacheStart:x} (native 0x{plain.NativeStart:x})";
            m.Stop(StopReason.Exited, 0, "checked");
        });
        var r = m.Run();
        Assert.True(r.Reason == StopReason.Exited && r.Message == "checked", $"{r.Reason}: {r.Message}");
        Assert.True(ordinary, $"an ordinary block start must be a safe point: {where}");
        Assert.False(entryPath, $"an entry-mode block start must not be a safe point: {where}");
        // Nor the kernel's exception-table lookup, native or translated (a flush would empty the table under its scan).
        Assert.True(otherNative);
        Assert.False(fixupNative);
        Assert.False(fixupTranslated);
    }
}
