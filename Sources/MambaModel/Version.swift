/// The tool's version, written into every file it makes.
public enum MambaQuantVersion {
    public static let current = "0.1.0"
}
