using System.Diagnostics;

namespace Harness.Cli;

/// <summary>Finds the repository's guest kernel and builds it (guest/build.sh, incremental) when needed.</summary>
internal static class DefaultImage
{
    public const string RelativeImage = "guest/build/kernel/kernel.elf";

    public sealed class BuildException(string message) : Exception(message);

    /// <summary>
    /// The bundled kernel's path, after an incremental build. say: a progress line (null: quiet,
    /// e.g. under --stats json). A cancelled build (a signal) kills the build and throws
    /// OperationCanceledException.
    /// </summary>
    public static string Ensure(CancellationToken cancel = default, Action<string>? say = null)
    {
        string root = FindRoot() ?? throw new BuildException(
            "no image given and the bundled guest kernel was not found (run from inside the repository, or pass an image path)");
        string script = Path.Combine(root, "guest", "build.sh");
        string image = Path.Combine(root, RelativeImage);
        // A fresh clone builds everything (about 10 s): say so. An up-to-date tree is checked silently.
        if (!File.Exists(image)) say?.Invoke($"building the guest kernel and its programs ({Path.GetRelativePath(Environment.CurrentDirectory, script)}) ...");
        // One build at a time per checkout: parallel harness processes (explore shards) would race
        // in make's temporary files. The lock is an exclusively opened file, released by the OS if
        // this process dies.
        Directory.CreateDirectory(Path.Combine(root, "guest", "build"));
        using var buildLock = AcquireLock(Path.Combine(root, "guest", "build", ".build.lock"), cancel);
        var psi = new ProcessStartInfo("bash", [script]) { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = root };
        using var p = Process.Start(psi) ?? throw new BuildException("could not start bash to build the guest kernel");
        var output = p.StandardOutput.ReadToEndAsync(CancellationToken.None);
        var errors = p.StandardError.ReadToEndAsync(CancellationToken.None);
        try { p.WaitForExitAsync(cancel).GetAwaiter().GetResult(); }
        catch (OperationCanceledException)
        {
            try { p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
            throw;
        }
        if (p.ExitCode != 0) throw new BuildException($"building the guest kernel failed ({script}):\n{(output.Result + errors.Result).TrimEnd()}");
        return image;
    }

    private static FileStream AcquireLock(string path, CancellationToken cancel)
    {
        var waited = Stopwatch.StartNew();
        while (true)
        {
            try { return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None); }
            catch (IOException) when (waited.Elapsed < TimeSpan.FromMinutes(5))
            {
                // Another harness process is building: wait for it (its build is ours too).
                cancel.WaitHandle.WaitOne(200);
                cancel.ThrowIfCancellationRequested();
            }
            catch (IOException e)
            {
                throw new BuildException($"another process has held {path} for 5 minutes (a guest build in progress?): {e.Message}");
            }
        }
    }

    private static string? FindRoot()
    {
        foreach (var start in new[] { Environment.CurrentDirectory, AppContext.BaseDirectory })
        {
            for (var d = new DirectoryInfo(start); d is not null; d = d.Parent)
                if (File.Exists(Path.Combine(d.FullName, "guest", "build.sh")) && File.Exists(Path.Combine(d.FullName, "Harness.sln")))
                    return d.FullName;
        }
        return null;
    }
}
