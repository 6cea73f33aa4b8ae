using Frugal.Models;

return FrugalCli.Run(args);
