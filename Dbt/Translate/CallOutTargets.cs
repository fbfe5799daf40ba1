using Harness.Smp;
using Iced.Intel;

namespace Harness.Dbt.Translate;

/// <summary>
/// The host functions translated code calls out to through the dispatcher (the DBT's "module code"
/// for the instructions the translator must see), as the rules and the gate stubs reach them. The
/// translator depends on this and on nothing that depends on it: the objects behind it (the
/// kernel-entry shadows, the switch) are built after the translator, and <see cref="Dbt"/>, which
/// builds everything in dependency order, implements it by forwarding to them.
/// </summary>
internal interface ICallOutTargets
{
    ulong? Lidt(Vcpu v, ulong nativeRsp, Instruction ins);
    ulong? Sidt(Vcpu v, ulong nativeRsp, Instruction ins);
    ulong? Wrmsr(Vcpu v, ulong nativeRsp);
    ulong? Rdmsr(Vcpu v, ulong nativeRsp);
    /// <summary>DRK-style iretq: a dispatcher exit (<see cref="DbtOptions.InterruptsViaDispatcher"/>).</summary>
    ulong? DrkIretq(Vcpu v, ulong nativeRsp);
    /// <summary>The kernel's DBT hypercall (switchon, switchoff, query): its result for RAX.</summary>
    long Hypercall(Vcpu v);
    /// <summary>DRK-style gate stubs: the interrupt frame at frame made native.</summary>
    void NativeFrame(Vcpu v, ulong frame, int vector);
}
