// swift-tools-version:6.0
// libFuzzer targets for mambaquant's input parsers (scripts/fuzz.sh builds and runs them). A
// package of its own so the main build never carries the sanitizer flags.
import PackageDescription

let package = Package(
    name: "mambaquant-fuzz",
    dependencies: [.package(name: "mambaquant", path: "..")],
    targets: [
        .executableTarget(
            name: "mambaquant-fuzz",
            dependencies: [
                .product(name: "MambaModel", package: "mambaquant"),
                .product(name: "MambaCalibration", package: "mambaquant"),
                .product(name: "MambaQuantization", package: "mambaquant"),
            ]),
    ]
)
