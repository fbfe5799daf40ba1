using Harness.Dbt.Cache;
using Harness.Smp;
using Iced.Intel;

namespace Harness.Dbt.Clients;

/// <summary>
/// A 64-bit counter in the code cache's data area, shared by every vCPU (increments are locked),
/// alone on its 64-byte line. Translated code adds to it (<see cref="Snippets"/>); the host reads it
/// at any time.
/// </summary>
public sealed class Counter
{
    private readonly CodeCache cache;

    internal Counter(Machine machine, CodeCache cache, string name, ulong address)
    {
        this.cache = cache;
        machine.Disposing += Freeze;
        Name = name;
        Address = address;
    }

    public string Name { get; }

    /// <summary>Virtual address (in the -2 GiB alias, so a sign-extended disp32 reaches it).</summary>
    public ulong Address { get; }

    private long? final;

    /// <summary>The current value; after the machine is disposed, the value it had then.</summary>
    public long Read() => final ?? (long)cache.ReadU64(Address);

    /// <summary>Keeps the value for reads after the machine's memory is freed (Machine.Disposing).</summary>
    internal void Freeze() => final = (long)cache.ReadU64(Address);

    /// <summary>qword [Address]: a sign-extended disp32 with no base (displacement size 8 tells Iced "64-bit addressing": 4 would add an address-size prefix).</summary>
    public MemoryOperand Operand => new(Register.None, Register.None, 1, (long)Address, 8, false, Register.None);

    public override string ToString() => $"{Name}={Read()}";
}
