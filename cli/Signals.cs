using System.Runtime.InteropServices;

namespace Harness.Cli;

/// <summary>
/// SIGINT, SIGTERM and SIGHUP all stop the work the same way: the first one cancels
/// <see cref="Token"/> (the machine stops cleanly, output is flushed and the report printed) and
/// the process exits 128 + the signal's number (130, 143, 129). Installed first thing in Main, so a
/// signal during the guest build, the image load or the DBT attach is handled like one during the
/// run, and kept until the process exits, so one that arrives while the report is printed cannot cut
/// it off. A second signal is left to its default action: a user can always kill a stuck run.
/// System.CommandLine's own termination handling is off (Program.cs), so exactly one handler decides.
/// </summary>
internal static class Signals
{
    private static readonly CancellationTokenSource cts = new();
    private static readonly List<PosixSignalRegistration> registrations = new();
    private static int received; // the first signal's number, 0 while none came

    public static CancellationToken Token => cts.Token;

    /// <summary>The first signal received (e.g. "SIGTERM"), or null.</summary>
    public static string? Received => Volatile.Read(ref received) switch { 0 => null, Sigint => "SIGINT", Sigterm => "SIGTERM", Sighup => "SIGHUP", int n => $"signal {n}" };

    /// <summary>The exit code of an interrupted run: 128 + the signal's number (130 when it was cancelled otherwise).</summary>
    public static int ExitCode => 128 + (Volatile.Read(ref received) is int n and > 0 ? n : Sigint);

    // The POSIX numbers (PosixSignal's values are .NET's own negative codes).
    private const int Sighup = 1, Sigint = 2, Sigterm = 15;

    public static void Install()
    {
        foreach (var (signal, number) in new[] { (PosixSignal.SIGINT, Sigint), (PosixSignal.SIGTERM, Sigterm), (PosixSignal.SIGHUP, Sighup) })
            registrations.Add(PosixSignalRegistration.Create(signal, ctx =>
            {
                if (Interlocked.CompareExchange(ref received, number, 0) != 0) return; // the second: default action
                ctx.Cancel = true;
                cts.Cancel();
            }));
    }
}
