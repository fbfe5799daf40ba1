using Harness.Dbt.Cache;
namespace Harness.Dbt;

/// <summary>How the translator runs: one of the named configurations (<see cref="Configurations"/>) plus test and tuning knobs.</summary>
public sealed record DbtOptions
{
    public static DbtOptions Default => new();

    /// <summary>The paper's no-callret configuration: calls push native return addresses and ret is an indirect branch.</summary>
    public static DbtOptions NoCallRet => new() { CallRet = false };

    /// <summary>
    /// The design the paper improves on (DRK, VMware's kernel translator): full transparency.
    /// Native return addresses (as no-callret), and every interrupt, exception and syscall enters
    /// through the dispatcher, which gives handlers native PCs (<see cref="InterruptsViaDispatcher"/>).
    /// </summary>
    public static DbtOptions Drk => new() { CallRet = false, InterruptsViaDispatcher = true };

    /// <summary>The named configurations, as the CLI spells them.</summary>
    public static IReadOnlyList<string> Configurations { get; } = ["default", "no-callret", "drk"];

    /// <summary>The configuration named name (<see cref="Configurations"/>); ArgumentException naming the known ones otherwise.</summary>
    public static DbtOptions Named(string name) => name switch
    {
        "default" => Default,
        "no-callret" => NoCallRet,
        "drk" => Drk,
        _ => throw new ArgumentException($"unknown DBT configuration '{name}' (known: {string.Join(", ", Configurations)})", nameof(name)),
    };

    /// <summary>These options with the knobs that define the configuration named name (the planted bugs and tuning kept).</summary>
    public DbtOptions As(string name)
    {
        var c = Named(name);
        return this with { CallRet = c.CallRet, InterruptsViaDispatcher = c.InterruptsViaDispatcher };
    }

    /// <summary>call/ret identity translation (default) or not (no-callret, drk).</summary>
    public bool CallRet { get; init; } = true;

    /// <summary>
    /// DRK-style entries: the shadow IDT's gates and LSTAR lead to dispatcher stubs, which convert
    /// the interrupted code-cache PC in the frame to its native value (rolling a synchronous
    /// exception back to the start of its native instruction with the recovery points) before going
    /// to the handler's translation; external interrupts are held until the vCPU is at a native
    /// instruction boundary (<see cref="Harness.Smp.HostAgent.InterruptBoundary"/>); iretq is a
    /// dispatcher exit that translates the RIP it returns to. Handlers see only native PCs.
    /// </summary>
    public bool InterruptsViaDispatcher { get; init; }

    /// <summary>
    /// Planted bug for the DRK-style configuration: external interrupts are not held to native
    /// boundaries (no <see cref="Harness.Smp.HostAgent.InterruptBoundary"/>), so handlers get frames
    /// rolled back from inside translations: imprecise interrupts, which DRK's design forbids.
    /// </summary>
    public bool PlantedDrkInterruptsAnywhere { get; init; }

    /// <summary>The configuration's name as the CLI spells it.</summary>
    public string Name => InterruptsViaDispatcher ? "drk" : CallRet ? "default" : "no-callret";

    /// <summary>A block ends (with a chained jmp to the next native instruction) after this many native instructions.</summary>
    public int MaxBlockInstructions { get; init; } = 256;

    /// <summary>
    /// The dispatcher never patches an edge, so every execution of an unchained branch re-enters the
    /// dispatcher: the unchained baseline of the chained-equals-unchained property (Properties/), and
    /// a planted slowdown for the harness's self-checks.
    /// </summary>
    public bool DropChainingPatch { get; init; }

    /// <summary>
    /// Guest instruction (retired by vCPU 0) at which the DBT switches on; null or 0: at boot (every
    /// vCPU starts translated). Until then the machine runs natively.
    /// </summary>
    public long? SwitchOnAt { get; init; }

    /// <summary>
    /// Caps the main pool (translated blocks) at this many bytes, so that a workload fills it and the
    /// cache-full path (switchoff, wipe, switchon) runs; null: the whole reserved region.
    /// </summary>
    public ulong? MainPoolLimit { get; init; }

    /// <summary>The kernel's ELF symbols (exception tables); null: no exception-table registration.</summary>
    public Kernel.KernelImage? Kernel { get; init; }

    /// <summary>Entries in the DBT's own exception table (registered by the kernel at boot).</summary>
    public int ExceptionTableCapacity { get; init; } = 256;

    /// <summary>Where the DBT's per-CPU words sit in the area GS points to (the kernel's <c>module_percpu</c>).</summary>
    public int PerCpuOffset { get; init; } = PerCpu.DefaultOffset;

    /// <summary>Planted bug (the paper's "most subtle issue"): the inline jumptable lookup runs without cli.</summary>
    public bool PlantedLookupWithInterrupts { get; init; }

    /// <summary>Planted bug: edge stubs enter the dispatcher without cli ("pushfq; nop; vmcall").</summary>
    public bool PlantedEdgeWithoutCli { get; init; }

    /// <summary>Planted bug: switchoff leaves code-cache return addresses on kernel stacks (a flush then wipes code threads still return into).</summary>
    public bool PlantedSwitchoffKeepsStacks { get; init; }

    /// <summary>Planted bug: iretq does not restore tx-nextpc-loc from the frame's redundant slot.</summary>
    public bool PlantedNoTxNextPcRestore { get; init; }

    /// <summary>
    /// Planted bug: the chaining patch stores its rel32 one byte at a time, so another vCPU can
    /// decode the branch with a displacement half old, half new (with the test seams on, a
    /// scheduling point sits between the stores).
    /// </summary>
    public bool PlantedTornChainingPatch { get; init; }

    /// <summary>Clients to attach, by registered name (<see cref="Clients.ClientRegistry"/>), e.g. "prof".</summary>
    public IReadOnlyList<string> Clients { get; init; } = [];

    /// <summary>Mnemonics translated by a registered rule of the user's choice instead of the built-in table's (<see cref="Translate.RuleRegistry"/>).</summary>
    public IReadOnlyDictionary<Iced.Intel.Mnemonic, string> RuleOverrides { get; init; } = new Dictionary<Iced.Intel.Mnemonic, string>();

    /// <summary>Planted bug: client counter snippets add without saving the flags around the add.</summary>
    public bool PlantedCounterClobbersFlags { get; init; }

    /// <summary>
    /// Debug hook called at every dispatcher entry before the dispatcher acts (on the entering vCPU's
    /// thread): the state check (<see cref="Verify.StateCheck"/>) compares the vCPU with a native
    /// reference there. Null (production): the dispatcher pays one null test per entry.
    /// </summary>
    public Action<Harness.Smp.Vcpu, Dispatch.DispatcherEntry>? OnDispatcherEntry { get; init; }

    /// <summary>
    /// Planted bug for the state check: every translated direct jmp flips CF (a cmc before the jmp).
    /// Code rarely reads flags across an unconditional jmp, so results still match native; the flags
    /// the next dispatcher entry saves do not.
    /// </summary>
    public bool PlantedJmpFlipsCarry { get; init; }

    /// <summary>
    /// Planted bug for the scratch-on-stack property: the register-form jumptable lookup also parks
    /// its scratch register in a per-CPU cell (gs:[64]) and restores it from there before leaving.
    /// Results match native unless an interrupt on the same CPU runs a lookup inside the window
    /// (it overwrites the cell); the translated run's stores do not.
    /// </summary>
    public bool PlantedScratchInPerCpuCell { get; init; }

    /// <summary>Planted bug: the exception-table registration skips plain loads (mov r, m): their translated copies fault with no fixup.</summary>
    public bool PlantedFixupNotRegisteredForLoads { get; init; }

    /// <summary>
    /// Planted bug for the switch property: a vCPU switched off at the exit stub's popfq resumes
    /// natively with the kernel's flags but without popping the flags word the dispatcher entry
    /// pushed (RSP 8 bytes low: the next ret or pop reads the wrong word).
    /// </summary>
    public bool PlantedExitStubRecoveryKeepsFlags { get; init; }

    /// <summary>
    /// Planted bug (the safe-point filter as it was before Properties' flush property found the
    /// hole): a vCPU in the exit stub or an edge stub is a safe point whatever native code it is
    /// going to, so a flush can resume it inside exception_fixup's scan with the DBT's table emptied.
    /// </summary>
    public bool PlantedStubTargetsIgnoredAtSafePoints { get; init; }

    /// <summary>
    /// Planted bug (the safe-point filter before Properties' flush property found it): a vCPU in an
    /// sti shadow is a safe point, so a switch can resume it at a fresh block whose counter snippet
    /// opens an interrupt window between sti and hlt.
    /// </summary>
    public bool PlantedSwitchInInterruptShadow { get; init; }

    /// <summary>
    /// Planted bug (switchoff before Properties' flush property found it): an interrupt frame whose
    /// RIP is the level-2 jumptable routine's final ret is left alone, so after a wipe its iretq
    /// returns through a stale tx.
    /// </summary>
    public bool PlantedLevel2ReturnNotRecovered { get; init; }

    /// <summary>
    /// Planted bug (the recovery points before Properties' flush property found it): the taken branch
    /// of a loop/jrcxz translation has no recovery point, so switchoff leaves an interrupt frame there
    /// pointing into the old cache.
    /// </summary>
    public bool PlantedCountedJccTakenNotRecovered { get; init; }

    /// <summary>
    /// Planted bug (no-callret's ret imm16 before Properties' flush property found it): the return
    /// address is moved over the released bytes before the lookup's cli, so an interrupt frame can
    /// hold a point half way through the ret, which switchoff cannot map.
    /// </summary>
    public bool PlantedRetImmMovedWithInterrupts { get; init; }

    /// <summary>Planted bug: the chaining patch computes its rel32 from the edge stub's address instead of the patch site's.</summary>
    public bool PlantedChainRelativeToStub { get; init; }

    /// <summary>
    /// Planted bug (an off-by-one recovery point): switchoff maps a parked vCPU's code-cache state
    /// with the recovery of the block's next recovery point (a fencepost in the points table lookup),
    /// so it resumes with the wrong native RIP or stack.
    /// </summary>
    public bool PlantedRecoveryOffByOne { get; init; }

    /// <summary>
    /// Planted bug: the level-2 jumptable routine moves a hit to the front of its group with the
    /// native interrupt state (sti when the saved flags had IF), so an interrupt can see the group
    /// half swapped, and its frame sits at a routine address no recovery knows.
    /// </summary>
    public bool PlantedLevel2MoveToFrontWithInterrupts { get; init; }

    /// <summary>
    /// Planted bug: switchoff (and so a flush) does not map the highest-numbered other vCPU's parked
    /// state back to native: it resumes in the old (wiped) cache.
    /// </summary>
    public bool PlantedFlushSkipsOneVcpu { get; init; }
}
