using System.Numerics;

namespace Harness.Smp.Apic;

/// <summary>
/// The x2APIC of one vCPU: interrupt request/in-service registers and the timer. Guest time is
/// the owner's retired-instruction count. Other vCPUs only call <see cref="Post"/>; everything
/// else runs on the owner's thread.
/// </summary>
public sealed class LocalApic
{
    public const uint MsrId = 0x802, MsrVersion = 0x803, MsrTpr = 0x808, MsrEoi = 0x80B, MsrLdr = 0x80D, MsrSvr = 0x80F;
    public const uint MsrIcr = 0x830, MsrLvtTimer = 0x832, MsrInitCount = 0x838, MsrCurCount = 0x839, MsrDivide = 0x83E;
    public const uint LvtMasked = 1 << 16, LvtPeriodic = 1 << 17;

    // Vectors posted by other threads, not yet seen by the owner (bit per vector).
    private readonly ulong[] incoming = new ulong[4];
    private readonly ulong[] irr = new ulong[4];
    private readonly ulong[] isr = new ulong[4];
    private readonly long[] readyAt = new long[256];

    public uint LvtTimer = LvtMasked;
    public uint InitialCount;
    public uint DivideConfig;
    public uint Svr = 0xFF;
    private long timerStart;
    /// <summary>Guest time of the next timer expiry; long.MaxValue when the timer is off.</summary>
    public long TimerDeadline { get; private set; } = long.MaxValue;

    /// <summary>The timer will raise an interrupt at its deadline (armed and not masked).</summary>
    public bool TimerWakes => TimerDeadline != long.MaxValue && (LvtTimer & LvtMasked) == 0;

    public int Divisor => ((DivideConfig & 8) >> 1 | DivideConfig & 3) is var v && v == 7 ? 1 : 2 << (int)v;

    /// <summary>From any thread: request vector. Returns true if it was newly posted.</summary>
    public bool Post(int vector)
    {
        ulong bit = 1UL << (vector & 63);
        return (Interlocked.Or(ref incoming[vector >> 6], bit) & bit) == 0;
    }

    public bool HasIncoming => (Volatile.Read(ref incoming[0]) | Volatile.Read(ref incoming[1]) | Volatile.Read(ref incoming[2]) | Volatile.Read(ref incoming[3])) != 0;

    /// <summary>Owner: move posted vectors into the IRR, deliverable after the delay the control chooses.</summary>
    public void Accept(long now, Func<int, long> delay)
    {
        for (int w = 0; w < 4; w++)
        {
            ulong bits = Interlocked.Exchange(ref incoming[w], 0);
            while (bits != 0)
            {
                int v = w * 64 + BitOperations.TrailingZeroCount(bits);
                bits &= bits - 1;
                Raise(v, now + delay(v));
            }
        }
    }

    /// <summary>Owner: whether the vector is in service (delivered, its EOI not yet written).</summary>
    public bool InService(int vector) => (isr[vector >> 6] & (1UL << (vector & 63))) != 0;

    /// <summary>Owner: whether the vector is pending (requested, not yet delivered).</summary>
    public bool IsPending(int vector) => (irr[vector >> 6] & (1UL << (vector & 63))) != 0;

    /// <summary>Owner: the vector becomes pending, deliverable from guest time `at`.</summary>
    public void Raise(int vector, long at)
    {
        ulong bit = 1UL << (vector & 63);
        if ((irr[vector >> 6] & bit) != 0) return; // already pending: keep the earlier time
        irr[vector >> 6] |= bit;
        readyAt[vector] = at;
    }

    private static int Highest(ulong[] r)
    {
        for (int w = 3; w >= 0; w--)
            if (r[w] != 0) return w * 64 + 63 - BitOperations.LeadingZeroCount(r[w]);
        return -1;
    }

    /// <summary>
    /// The vector that would be delivered now (highest pending whose priority class beats the
    /// highest in service), and the earliest guest time at which some pending vector becomes
    /// deliverable (long.MaxValue if none can be, until an EOI).
    /// </summary>
    public int Deliverable(long now, out long earliest)
    {
        earliest = long.MaxValue;
        int inService = Highest(isr);
        int best = -1;
        for (int w = 3; w >= 0; w--)
        {
            ulong bits = irr[w];
            while (bits != 0)
            {
                int v = w * 64 + 63 - BitOperations.LeadingZeroCount(bits);
                bits &= ~(1UL << (v & 63));
                if (inService >= 0 && (v >> 4) <= (inService >> 4)) continue;
                if (readyAt[v] <= now) { if (best < 0) best = v; }
                else if (readyAt[v] < earliest) earliest = readyAt[v];
            }
        }
        if (best >= 0) earliest = now;
        return best;
    }

    /// <summary>
    /// Some pending vector can be delivered without an EOI first: its priority class beats the
    /// highest in service. (A vector blocked by the in-service one cannot wake a halted vCPU: only
    /// the vCPU itself could EOI, so counting it would turn a deadlock into an endless spin.)
    /// </summary>
    public bool AnyPending
    {
        get
        {
            int pending = Highest(irr);
            if (pending < 0) return false;
            int inService = Highest(isr);
            return inService < 0 || (pending >> 4) > (inService >> 4);
        }
    }

    /// <summary>Owner: the vector is being delivered.</summary>
    public void Acknowledge(int vector)
    {
        irr[vector >> 6] &= ~(1UL << (vector & 63));
        isr[vector >> 6] |= 1UL << (vector & 63);
    }

    public void Eoi()
    {
        int v = Highest(isr);
        if (v >= 0) isr[v >> 6] &= ~(1UL << (v & 63));
    }

    public void WriteTimer(uint msr, uint value, long now)
    {
        switch (msr)
        {
            case MsrLvtTimer: LvtTimer = value & (0xFF | LvtMasked | LvtPeriodic); break;
            case MsrDivide: DivideConfig = value & 0xB; break;
            case MsrInitCount:
                InitialCount = value;
                timerStart = now;
                TimerDeadline = value == 0 ? long.MaxValue : now + (long)value * Divisor;
                break;
        }
    }

    public uint CurrentCount(long now)
    {
        if (TimerDeadline == long.MaxValue || InitialCount == 0) return 0;
        // Decrements once per divisor instructions: after t instructions, initial - floor(t / divisor),
        // i.e. the remaining time divided by the divisor rounded up.
        long left = (TimerDeadline - now + Divisor - 1) / Divisor;
        return left <= 0 ? 0 : (uint)Math.Min(left, InitialCount);
    }

    /// <summary>Owner: the timer expired at its deadline; raises its vector unless masked and re-arms a periodic timer.</summary>
    public void TimerExpired(long delay)
    {
        long at = TimerDeadline;
        if ((LvtTimer & LvtMasked) == 0) Raise((int)(LvtTimer & 0xFF), at + delay);
        if ((LvtTimer & LvtPeriodic) != 0 && InitialCount != 0)
        {
            timerStart = at;
            TimerDeadline = at + (long)InitialCount * Divisor;
        }
        else TimerDeadline = long.MaxValue;
    }

    /// <summary>Copies every register and timer field of other (a snapshot's, or into one).</summary>
    public void CopyFrom(LocalApic other)
    {
        other.incoming.CopyTo(incoming, 0);
        other.irr.CopyTo(irr, 0);
        other.isr.CopyTo(isr, 0);
        other.readyAt.CopyTo(readyAt, 0);
        LvtTimer = other.LvtTimer;
        InitialCount = other.InitialCount;
        DivideConfig = other.DivideConfig;
        Svr = other.Svr;
        timerStart = other.timerStart;
        TimerDeadline = other.TimerDeadline;
    }

    public void Reset()
    {
        Array.Clear(incoming); Array.Clear(irr); Array.Clear(isr);
        LvtTimer = LvtMasked; InitialCount = 0; DivideConfig = 0; TimerDeadline = long.MaxValue;
    }
}
