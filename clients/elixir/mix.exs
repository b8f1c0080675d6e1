defmodule Granary.MixProject do
  use Mix.Project

  # No Hex dependencies: the client speaks the binary protocol over :gen_tcp.
  def project do
    [app: :granary, version: "0.1.0", elixir: "~> 1.14", deps: []]
  end

  def application, do: [extra_applications: [:logger, :crypto]]
end
