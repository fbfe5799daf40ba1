using System.Text.Json;
using System.Text.Json.Serialization;

namespace Harness.Verification.Generic;

/// <summary>
/// Shard i of N of an exploration (`harness explore --shard i/N`): the same scenario, options,
/// seed and per-shard iterations I in every shard; shard i explores iterations (i-1)*I+1 .. i*I of
/// the one exploration of N*I iterations from that seed (Coyote seeds iteration j of an
/// exploration from seed + j - 1, so shard i starts from seed + (i-1)*I).
/// </summary>
public readonly record struct ShardSpec(int Index, int Count)
{
    /// <summary>Parses "i/N" (1 &lt;= i &lt;= N &lt;= 100000); the message says what is wrong.</summary>
    public static ShardSpec Parse(string text)
    {
        var parts = text.Split('/');
        if (parts.Length != 2 || !int.TryParse(parts[0], out int i) || !int.TryParse(parts[1], out int n))
            throw new FormatException($"--shard: '{text}' is not i/N (e.g. 2/8)");
        if (n is < 1 or > 100_000 || i < 1 || i > n) throw new FormatException($"--shard: '{text}': need 1 <= i <= N <= 100000");
        return new ShardSpec(i, n);
    }

    /// <summary>The seed this shard's exploration starts from.</summary>
    public uint SeedOf(uint seed, uint iterations) => unchecked(seed + (uint)(Index - 1) * iterations);

    /// <summary>A shard's local iteration (1-based) as an iteration of the whole exploration.</summary>
    public long Global(int local, uint iterations) => (long)(Index - 1) * iterations + local;

    public override string ToString() => $"{Index}/{Count}";
}

/// <summary>One shard's result, as it writes it (shard-i-of-N.json in its traces folder) for <see cref="ShardResult.Merge"/>.</summary>
public sealed record ShardResult
{
    public const string FormatName = "harness-shard/1";
    public string Format { get; init; } = FormatName;
    public required string Scenario { get; init; }
    public required string ScenarioName { get; init; }
    public required ScenarioArgs Args { get; init; }
    public required uint Seed { get; init; }
    public required uint Iterations { get; init; }
    public required string Strategy { get; init; }
    public required int Shard { get; init; }
    public required int Shards { get; init; }
    public required int IterationsRun { get; init; }
    public required long TotalSteps { get; init; }
    public required int MaxSteps { get; init; }
    public required int StepBoundHits { get; init; }
    public required double Seconds { get; init; }
    /// <summary>The bug's iteration in the whole exploration (null: clean).</summary>
    public long? BugIteration { get; init; }
    public string? Failure { get; init; }
    /// <summary>The bug's trace file, relative to the shard's folder.</summary>
    public string? Trace { get; init; }
    public Dictionary<string, long> Counters { get; init; } = [];

    private static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.CamelCase, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    public static string FileName(int shard, int shards) => $"shard-{shard}-of-{shards}.json";

    public void Write(string directory)
    {
        string path = Path.Combine(directory, FileName(Shard, Shards));
        File.WriteAllText(path + ".tmp", JsonSerializer.Serialize(this, Json));
        File.Move(path + ".tmp", path, overwrite: true);
    }

    /// <summary>The merged view of every shard under directory (searched recursively, so each shard may write to its own folder).</summary>
    public sealed record Merged(IReadOnlyList<ShardResult> Shards, IReadOnlyList<(ShardResult Shard, string Directory)> Bugs)
    {
        public ShardResult First => Shards[0];
        public long IterationsRun => Shards.Sum(s => (long)s.IterationsRun);
        public long TotalSteps => Shards.Sum(s => s.TotalSteps);
        public int StepBoundHits => Shards.Sum(s => s.StepBoundHits);
        public int MaxSteps => Shards.Max(s => s.MaxSteps);
        /// <summary>Host seconds summed over the shards (they ran in parallel: the wall time is less).</summary>
        public double Seconds => Shards.Sum(s => s.Seconds);
    }

    /// <summary>
    /// Reads every shard file under directory and checks they are the N shards of one exploration
    /// (the same scenario, options, seed, iterations and strategy; every index once). Bugs are in
    /// the order of their iteration in the whole exploration: the first is the one an unsharded run
    /// would have stopped at. Bad or missing shards: a FormatException naming the file or the index.
    /// </summary>
    public static Merged Merge(string directory)
    {
        if (!Directory.Exists(directory)) throw new FormatException($"--merge: {directory}: no such directory");
        var files = Directory.EnumerateFiles(directory, "shard-*-of-*.json", SearchOption.AllDirectories).Order(StringComparer.Ordinal).ToList();
        if (files.Count == 0) throw new FormatException($"--merge: {directory}: no shard results (shard-i-of-N.json) in it");
        var shards = new List<(ShardResult R, string Dir)>();
        foreach (var f in files)
        {
            ShardResult? r;
            try { r = JsonSerializer.Deserialize<ShardResult>(File.ReadAllText(f), Json); }
            catch (Exception e) when (e is JsonException or IOException or UnauthorizedAccessException)
            {
                throw new FormatException($"--merge: {f}: not a shard result: {e.Message}");
            }
            if (r is null || r.Format != FormatName) throw new FormatException($"--merge: {f}: not a {FormatName} shard result");
            shards.Add((r, Path.GetDirectoryName(f)!));
        }
        var a = shards[0].R;
        foreach (var (r, d) in shards)
            if (r.Scenario != a.Scenario || r.Seed != a.Seed || r.Iterations != a.Iterations || r.Strategy != a.Strategy || r.Shards != a.Shards
                || JsonSerializer.Serialize(r.Args, Json) != JsonSerializer.Serialize(a.Args, Json))
                throw new FormatException($"--merge: {Path.Combine(d, FileName(r.Shard, r.Shards))} is a shard of another exploration " +
                    $"({r.Scenario}, seed {r.Seed}, {r.Iterations} iterations, {r.Shards} shards; the first: {a.Scenario}, seed {a.Seed}, {a.Iterations}, {a.Shards})");
        var dup = shards.GroupBy(s => s.R.Shard).FirstOrDefault(g => g.Count() > 1);
        if (dup is not null) throw new FormatException($"--merge: shard {dup.Key}/{a.Shards} appears {dup.Count()} times");
        var missing = Enumerable.Range(1, a.Shards).Except(shards.Select(s => s.R.Shard)).ToList();
        if (missing.Count > 0) throw new FormatException($"--merge: {missing.Count} of {a.Shards} shards missing: {string.Join(", ", missing.Take(20))}");
        var ordered = shards.OrderBy(s => s.R.Shard).ToList();
        return new Merged(ordered.Select(s => s.R).ToList(),
            ordered.Where(s => s.R.BugIteration is not null).OrderBy(s => s.R.BugIteration).Select(s => (s.R, s.Dir)).ToList());
    }
}
